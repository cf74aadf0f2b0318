"""TrainingService methods of both clients: ``train``, ``submit``, ``watch``, ``jobs``, ``get_job``,
``get_result``, ``history``, ``cancel``.

:class:`Jobs` (mixed into :class:`~lossd.client.Client`) and :class:`AsyncJobs`
(into :class:`~lossd.client.AsyncClient`) differ only in how they wait; specs,
results, progress and the re-attach bookkeeping are in ``_training.py``. A stream
that fails with ``Unavailable`` after the job id is known is re-attached with
``WatchJob(after_seq=<last seq seen>)`` (up to ``MAX_REATTACH`` times in a row, with
backoff; the count starts over once a re-attached stream delivers an event), so a server
restart or a dropped connection does not lose the job. A ``timeout`` bounds the whole
of it, re-attaches included (``DeadlineExceeded``).

>>> with Client() as c:                                     # doctest: +SKIP
...     job_id = c.submit("spec.json")
...     for event in c.watch(job_id):
...         print(event.seq, event.state)
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, TypeVar

from ..v1 import training_pb2
from ._calls import ClientBase, Method
from ._errors import DeadlineExceeded, Unavailable
from ._training import (
    CANCEL_JOB,
    DELETE_JOB,
    GET_JOB,
    LIST_JOBS,
    TERMINAL_STATES,
    TRAIN_JOB,
    WATCH_JOB,
    JobFollower,
    Progress,
    SpecLike,
    TrainResult,
    epoch_summary,
    load_spec,
)

__all__ = ["Jobs", "AsyncJobs", "list_jobs_request"]

R = TypeVar("R")
T = TypeVar("T")

#: A job state by name (``"RUNNING"``, ``"JOB_STATE_RUNNING"``) or number.
StateLike = str | int


def _event(reply: training_pb2.TrainJobResponse | training_pb2.WatchJobResponse) -> training_pb2.JobEvent:
    return reply.event


def _state(state: StateLike) -> int:
    if isinstance(state, int):
        return state
    name = state.upper()
    return int(training_pb2.JobState.Value(name if name.startswith("JOB_STATE_") else f"JOB_STATE_{name}"))


#: The most jobs a server lists in one page (ListJobs' ``page_size`` is clamped to it).
MAX_PAGE_SIZE = 1000


def list_jobs_request(states: Iterable[StateLike] = (), page_size: int = 0,
                      page_token: str = "") -> training_pb2.ListJobsRequest:
    """A ``ListJobsRequest`` for one page; states by name or number.

    >>> list_jobs_request(["running", "QUEUED"], page_size=5).states
    [2, 1]
    """
    # limit too, the older name of page_size, for a server from before paging (it reads no page_size)
    return training_pb2.ListJobsRequest(states=[_state(s) for s in states],  # type: ignore[misc]
                                        limit=page_size, page_size=page_size, page_token=page_token)


def _page_size(limit: int, listed: int) -> int:
    """The page to ask for: what ``limit`` (0: no limit) leaves after ``listed`` jobs, at most a server's page."""
    if limit < 0:
        raise ValueError(f"limit is {limit}; must be >= 0 (0: every job)")
    return min(limit - listed, MAX_PAGE_SIZE) if limit else MAX_PAGE_SIZE


def _paged(jobs: list[training_pb2.Job], page: training_pb2.ListJobsResponse, limit: int, token: str) -> str:
    """Add ``page``'s jobs to ``jobs`` (at most ``limit`` in all; 0: no limit); the token of the next page to read,
    ``""`` when the listing is done. A page without jobs, or one that sends back the token that asked for it,
    ends it too: lossd's server makes neither, and a server that did would keep the loop calling for ever.

    >>> jobs = []
    >>> _paged(jobs, training_pb2.ListJobsResponse(jobs=[training_pb2.Job()] * 3, next_page_token="t"), 2, "")
    ''
    >>> len(jobs), _paged(jobs, training_pb2.ListJobsResponse(next_page_token="u"), 0, "t")
    (2, '')
    """
    jobs += page.jobs
    if limit:
        del jobs[limit:]  # a server from before paging reads limit, and may send up to 100 whatever is asked
    following = page.next_page_token
    done = not page.jobs or following == token or (limit and len(jobs) >= limit)
    return "" if done else following


def _progress(progress: bool | Progress) -> Progress | None:
    if isinstance(progress, Progress):
        return progress
    return Progress() if progress else None


def _ends(timeout: float | None) -> float | None:
    """The ``time.monotonic()`` by which a job's streams must end: ``timeout`` bounds them all, re-attaches
    included (``None`` or ``math.inf``: no deadline, the default of the training streams)."""
    return None if timeout is None or math.isinf(timeout) else time.monotonic() + timeout


#: A re-attach is not tried with less than this left of the caller's timeout.
_LAST_TRY_S = 0.05


def _reattach_wait(follower: JobFollower, error: Unavailable, ends: float | None) -> tuple[float, float | None]:
    """The backoff before the next re-attach and the timeout the re-attached stream gets (what is left of
    the caller's); the backoff is cut short to leave that stream half of what is left, so that re-attaches
    go on until the caller's timeout has run out: then ``DeadlineExceeded``."""
    wait = follower.backoff_s()
    if ends is None:
        return wait, None
    left = ends - time.monotonic()
    if left <= _LAST_TRY_S:
        raise DeadlineExceeded(f"job {follower.job_id}: the timeout ran out while re-attaching after: {error.message}; "
                               f"the job runs on: watch it with after_seq={follower.after_seq}") from error
    wait = min(wait, left / 2)
    return wait, left - wait


def _train_request(spec: SpecLike, detach: bool, world_size: int | None = None) -> training_pb2.TrainJobRequest:
    request = load_spec(spec)
    request.detach = detach
    if world_size is not None:  # overrides the spec's; the server checks it (divisibility, --max-world-size)
        request.world_size = world_size
    return request


class Jobs(ClientBase):
    """The training methods of :class:`~lossd.client.Client`."""

    def _unary(self, method: Method[R], request: Any, timeout: float | None) -> R:
        raise NotImplementedError

    def _stream(self, method: Method[R], request: Any, timeout: float | None,
                decode: Callable[[R], T]) -> Iterator[T]:
        raise NotImplementedError

    def _follow(self, follower: JobFollower, events: Iterator[training_pb2.JobEvent], reattach: bool,
                timeout: float | None) -> Iterator[training_pb2.JobEvent]:
        """New events of ``events`` and, after ``Unavailable``, of re-attached WatchJob streams, all of
        them within ``timeout`` from the first (:func:`_ends`)."""
        ends = _ends(timeout)  # as the first stream starts: its deadline is ``timeout`` from its first read
        while True:
            try:
                for event in events:
                    if follower.is_new(event):
                        terminal = follower.feed(event)
                        yield event
                        if terminal:
                            return
                return
            except Unavailable as e:
                if not reattach or not follower.may_reattach():
                    raise
                wait, left = _reattach_wait(follower, e, ends)
                if self._closing.wait(wait):  # close() wakes the wait
                    raise self._closed_error(in_flight=True) from e
                events = self._stream(WATCH_JOB, follower.watch_request(), left, _event)

    def train(self, spec: SpecLike, *, progress: bool | Progress = True, as_torch: bool = False,
              world_size: int | None = None, timeout: float | None = None) -> TrainResult:
        """Run a job to its end and return its :class:`~lossd.client.TrainResult`.

        ``spec`` is a ``TrainJobRequest``, a JSON-style dict or a JSON/YAML file path.
        ``progress`` shows a tqdm bar (``lossd[progress]``; without tqdm, a line per
        epoch on stderr). ``as_torch`` decodes the parameters to torch tensors.
        ``world_size`` (overriding the spec's) trains on that many data-parallel
        processes (docs/scaling.md). ``timeout`` bounds the whole run, re-attaches after a dropped stream
        included (default: none): ``DeadlineExceeded`` when it runs out, while the job runs on. A FAILED job
        is returned, not raised: check ``result.state``.

        >>> result = client.train({"model": {"linear": {}}, ...}, progress=False)  # doctest: +SKIP
        >>> result.state, result.metrics["val_accuracy"]                          # doctest: +SKIP
        ('SUCCEEDED', 0.93)
        """
        request = _train_request(spec, detach=False, world_size=world_size)
        follower, bar = JobFollower(), _progress(progress)
        try:
            for event in self._follow(follower, self._stream(TRAIN_JOB, request, timeout, _event), True, timeout):
                if bar is not None:
                    bar.update(event)
        finally:
            if bar is not None:
                bar.close()
        if follower.final is None:
            raise Unavailable(f"the stream of job {follower.job_id or '?'} ended before the job did; "
                              f"watch it with after_seq={follower.after_seq}")
        return TrainResult.from_event(follower.final, request, as_torch)

    def submit(self, spec: SpecLike, *, world_size: int | None = None, timeout: float | None = None) -> str:
        """Submit a job without waiting (``detach``); returns its id (``world_size`` as for :meth:`train`).

        >>> job_id = client.submit("spec.yaml")   # doctest: +SKIP
        """
        request = _train_request(spec, detach=True, world_size=world_size)
        for event in self._stream(TRAIN_JOB, request, self.config.deadline(timeout), _event):  # one reply: a deadline
            return event.job_id
        raise Unavailable("TrainJob ended without its QUEUED event")

    def watch(self, job_id: str, after_seq: int = 0, *, reattach: bool = True,
              timeout: float | None = None) -> Iterator[training_pb2.JobEvent]:
        """The job's ``JobEvent`` messages after ``after_seq`` (stored ones first, then live ones)
        up to the terminal one; re-attaches after ``Unavailable`` unless ``reattach=False``.
        ``timeout`` bounds the whole watch, re-attaches included (default: none).

        >>> [training_pb2.JobState.Name(e.state) for e in client.watch(job_id)][-1]  # doctest: +SKIP
        'JOB_STATE_SUCCEEDED'
        """
        follower = JobFollower(job_id, after_seq)
        return self._follow(follower, self._stream(WATCH_JOB, follower.watch_request(), timeout, _event),
                            reattach, timeout)

    def jobs(self, states: Iterable[StateLike] = (), limit: int = 0, *,
             timeout: float | None = None) -> list[training_pb2.Job]:
        """Jobs, newest first (``Job`` messages without specs), optionally only in ``states``: every one, or the
        ``limit`` newest, read a page (ListJobs call) at a time; ``timeout`` bounds each call.

        >>> [j.job_id for j in client.jobs(["RUNNING"])]   # doctest: +SKIP
        ['3fa85f6457a1']
        """
        states, token = list(states), ""
        jobs: list[training_pb2.Job] = []
        while True:
            page = self._unary(LIST_JOBS, list_jobs_request(states, _page_size(limit, len(jobs)), token), timeout)
            if not (token := _paged(jobs, page, limit, token)):
                return jobs

    def get_job(self, job_id: str, *, timeout: float | None = None) -> training_pb2.Job:
        """One job's summary and spec (a ``Job`` message)."""
        return self._unary(GET_JOB, training_pb2.GetJobRequest(job_id=job_id), timeout).job

    def get_result(self, job_id: str, *, as_torch: bool = False, timeout: float | None = None) -> TrainResult:
        """The :class:`~lossd.client.TrainResult` of a job, waiting for its end if it still runs (at most
        ``timeout`` seconds, re-attaches included; default: no deadline)."""
        job = self.get_job(job_id, timeout=timeout)
        final = None
        for event in self.watch(job_id, max(0, job.last_seq - 1), timeout=timeout):
            final = event
        if final is None or final.state not in TERMINAL_STATES:
            raise Unavailable(f"job {job_id}: the stream ended before the job did")
        return TrainResult.from_event(final, job.spec, as_torch)

    def history(self, job_id: str, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """The per-epoch rows of a job so far (the terminal event's ``history`` once it ended)."""
        job = self.get_job(job_id, timeout=timeout)
        if job.state in TERMINAL_STATES:
            return self.get_result(job_id, timeout=timeout).history
        rows: dict[int, dict[str, Any]] = {}
        for event in self.watch(job_id, reattach=False, timeout=timeout):
            if event.kind == training_pb2.JOB_EVENT_KIND_EPOCH:
                rows[event.epoch] = epoch_summary(event)
            if event.seq >= job.last_seq:
                break
        return [rows[k] for k in sorted(rows)]

    def cancel(self, job_id: str, *, timeout: float | None = None) -> training_pb2.Job:
        """Stop a job; returns it once CANCELLED (or in the terminal state it reached first). A job already
        CANCELLED is returned as it is; one that ended SUCCEEDED or FAILED raises ``FailedPrecondition``."""
        return self._unary(CANCEL_JOB, training_pb2.CancelJobRequest(job_id=job_id), timeout).job

    def delete_job(self, job_id: str, *, timeout: float | None = None) -> training_pb2.Job:
        """Delete an ended job with its events and parameters; returns it as it was."""
        return self._unary(DELETE_JOB, training_pb2.DeleteJobRequest(job_id=job_id), timeout).job


class AsyncJobs(ClientBase):
    """The training methods of :class:`~lossd.client.AsyncClient`: ``await`` them, and
    ``async for event in client.watch(job_id)``."""

    async def _unary(self, method: Method[R], request: Any, timeout: float | None) -> R:
        raise NotImplementedError

    async def _backoff(self, seconds: float) -> None:
        """Wait ``seconds`` before a re-attach; a close() meanwhile ends the wait with ``Cancelled``."""
        raise NotImplementedError

    def _stream(self, method: Method[R], request: Any, timeout: float | None,
                decode: Callable[[R], T]) -> AsyncIterator[T]:
        raise NotImplementedError

    async def _follow(self, follower: JobFollower, events: AsyncIterator[training_pb2.JobEvent], reattach: bool,
                      timeout: float | None) -> AsyncIterator[training_pb2.JobEvent]:
        ends = _ends(timeout)
        while True:
            try:
                async for event in events:
                    if follower.is_new(event):
                        terminal = follower.feed(event)
                        yield event
                        if terminal:
                            return
                return
            except Unavailable as e:
                if not reattach or not follower.may_reattach():
                    raise
                wait, left = _reattach_wait(follower, e, ends)
                await self._backoff(wait)
                events = self._stream(WATCH_JOB, follower.watch_request(), left, _event)

    async def train(self, spec: SpecLike, *, progress: bool | Progress = False, as_torch: bool = False,
                    world_size: int | None = None, timeout: float | None = None) -> TrainResult:
        """Like :meth:`Client.train <lossd.client.Client.train>` (progress off by default)."""
        request = _train_request(spec, detach=False, world_size=world_size)
        follower, bar = JobFollower(), _progress(progress)
        try:
            async for event in self._follow(follower, self._stream(TRAIN_JOB, request, timeout, _event), True,
                                            timeout):
                if bar is not None:
                    bar.update(event)
        finally:
            if bar is not None:
                bar.close()
        if follower.final is None:
            raise Unavailable(f"the stream of job {follower.job_id or '?'} ended before the job did; "
                              f"watch it with after_seq={follower.after_seq}")
        return TrainResult.from_event(follower.final, request, as_torch)

    async def submit(self, spec: SpecLike, *, world_size: int | None = None, timeout: float | None = None) -> str:
        """Submit without waiting; returns the job id."""
        request = _train_request(spec, detach=True, world_size=world_size)
        stream = self._stream(TRAIN_JOB, request, self.config.deadline(timeout), _event)  # one reply: a deadline
        try:
            async for event in stream:
                return event.job_id
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        raise Unavailable("TrainJob ended without its QUEUED event")

    def watch(self, job_id: str, after_seq: int = 0, *, reattach: bool = True,
              timeout: float | None = None) -> AsyncIterator[training_pb2.JobEvent]:
        """``async for event in client.watch(job_id)``, like :meth:`Client.watch <lossd.client.Client.watch>`."""
        follower = JobFollower(job_id, after_seq)
        return self._follow(follower, self._stream(WATCH_JOB, follower.watch_request(), timeout, _event),
                            reattach, timeout)

    async def jobs(self, states: Iterable[StateLike] = (), limit: int = 0, *,
                   timeout: float | None = None) -> list[training_pb2.Job]:
        """Jobs, newest first: every one, or the ``limit`` newest, a page at a time (as :meth:`Jobs.jobs`)."""
        states, token = list(states), ""
        jobs: list[training_pb2.Job] = []
        while True:
            page = await self._unary(LIST_JOBS, list_jobs_request(states, _page_size(limit, len(jobs)), token), timeout)
            if not (token := _paged(jobs, page, limit, token)):
                return jobs

    async def get_job(self, job_id: str, *, timeout: float | None = None) -> training_pb2.Job:
        """One job's summary and spec."""
        return (await self._unary(GET_JOB, training_pb2.GetJobRequest(job_id=job_id), timeout)).job

    async def get_result(self, job_id: str, *, as_torch: bool = False, timeout: float | None = None) -> TrainResult:
        """A job's result, waiting for its end."""
        job = await self.get_job(job_id, timeout=timeout)
        final = None
        async for event in self.watch(job_id, max(0, job.last_seq - 1), timeout=timeout):
            final = event
        if final is None or final.state not in TERMINAL_STATES:
            raise Unavailable(f"job {job_id}: the stream ended before the job did")
        return TrainResult.from_event(final, job.spec, as_torch)

    async def history(self, job_id: str, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """The per-epoch rows of a job so far, like :meth:`Client.history <lossd.client.Client.history>`."""
        job = await self.get_job(job_id, timeout=timeout)
        if job.state in TERMINAL_STATES:
            return (await self.get_result(job_id, timeout=timeout)).history
        rows: dict[int, dict[str, Any]] = {}
        events = self.watch(job_id, reattach=False, timeout=timeout)
        async for event in events:
            if event.kind == training_pb2.JOB_EVENT_KIND_EPOCH:
                rows[event.epoch] = epoch_summary(event)
            if event.seq >= job.last_seq:
                break
        await events.aclose()  # type: ignore[attr-defined]
        return [rows[k] for k in sorted(rows)]

    async def cancel(self, job_id: str, *, timeout: float | None = None) -> training_pb2.Job:
        """Stop a job; returns it once it ended (as :meth:`Jobs.cancel`: a job already CANCELLED is returned as it
        is)."""
        return (await self._unary(CANCEL_JOB, training_pb2.CancelJobRequest(job_id=job_id), timeout)).job

    async def delete_job(self, job_id: str, *, timeout: float | None = None) -> training_pb2.Job:
        """Delete an ended job with its events and parameters; returns it as it was."""
        return (await self._unary(DELETE_JOB, training_pb2.DeleteJobRequest(job_id=job_id), timeout)).job
