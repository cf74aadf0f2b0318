"""The job manager: validation, the queue, worker processes, events, cancel, resume and shutdown.

Lives in the server process. ``submit`` validates a spec (on the server's
thread pool), stores the job and its QUEUED event, and starts a worker when
one of the ``max_jobs`` slots is free; at most ``max_queued_jobs`` wait. Each
running job has a worker process and a monitor thread that reads the
worker's events, numbers and stores them (``JobStore``) and wakes the
watchers. Watchers (``watch``) read stored events from the database and wait
for a wake-up when they have seen them all, so a slow client costs nothing
but its position, and a re-attaching client sees exactly what a live one saw.

At start, jobs the database shows RUNNING (the server died under them) get
an INTERRUPTED event and are queued again with QUEUED and INTERRUPTED ones,
oldest first; a worker resumes from the job's last checkpoint. ``close``
asks running workers to checkpoint and stop (INTERRUPTED), for the next
start to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import errno
import logging
import multiprocessing
import multiprocessing.context
import os
import re
import secrets
import signal
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..._settings import SettingError, flag_name
from ..._wire import FieldError, reply_encoding
from ...v1 import lossd_pb2, training_pb2
from .. import _metrics
from ..losses import Registry
from ..rpc import decode_tensor, encode_tensor
from ._checkpoint import DISK_FULL, disk_full, remove_checkpoint
from ._spec import TrainingLimits, check_loss_accepts_model, plan_job
from ._store import FINAL_STATES, TERMINAL_STATES, JobRow, JobStore
from ._worker import worker_main

__all__ = ["JobManager", "TrainingConfig", "JOB_ID"]

log = logging.getLogger("lossd.server.training")

#: What a job id looks like (server-generated; checked before any lookup or path).
JOB_ID = re.compile(r"[0-9a-f]{12}")
STATE = training_pb2.JOB_EVENT_KIND_STATE
#: Seconds a worker gets to act on a cancel (or, on shutdown, an interrupt) before it is killed.
STOP_GRACE_S = 10.0
#: On shutdown, the last seconds of the grace period left for killing workers that did not stop and recording it.
KILL_MARGIN_S = 1.0
#: Seconds between attempts to write held events while the data directory is full.
STORAGE_RETRY_S = 1.0
def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the data directory's file system is full (SQLite's SQLITE_FULL, ENOSPC, EDQUOT).

    >>> is_disk_full(sqlite3.OperationalError("database or disk is full")), is_disk_full(OSError(28, "No space"))
    (True, True)
    """
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", None) == 13 or "disk is full" in str(error)
    return disk_full(error)


@dataclass(frozen=True)
class TrainingConfig:
    """Where jobs live and how many may run; see ``lossd serve --help``."""

    data_dir: Path = Path(".lossd")
    max_jobs: int = 2
    max_queued_jobs: int = 32
    limits: TrainingLimits = field(default_factory=TrainingLimits)
    plugins: str = "none"
    #: HOST:PORT of the c10d TCPStore this server hosts for jobs with ``nodes`` > 1 ("": none).
    rdzv_endpoint: str = ""
    #: Times a job whose worker was killed (SIGKILL: the OOM killer) resumes from its checkpoint before it fails.
    max_job_restarts: int = 1


def _mp_context() -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    """``forkserver`` where available (torch preloaded once, then a job starts in ~20 ms), else ``spawn``.

    Like every spawn/forkserver user, a program that embeds the server must guard its entry
    point with ``if __name__ == "__main__":`` (``lossd serve`` and pytest do).
    """
    if sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["lossd.server.training._worker"])
        return ctx
    return multiprocessing.get_context("spawn")


@dataclass
class _Running:
    job_id: str
    process: Any = None  # set once the launcher has started it
    control: Connection | None = None
    events: Connection | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set on the event loop when the job settled
    cancel_requested: bool = False
    interrupt_requested: bool = False
    restart: bool = False  # the worker was killed (-9) and the job goes on from its checkpoint
    disk_full: bool = False  # interrupted because the data directory filled up: re-queued, resumed when space returns


class _DataDirLock:
    """An exclusive lock on the data directory: two servers must never run the same jobs."""

    def __init__(self, data_dir: Path) -> None:
        self._file = open(data_dir / "lock", "a+")  # noqa: SIM115  (held for the manager's life)
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise SettingError(f"--data-dir {data_dir} (env LOSSD_DATA_DIR): is in use by another lossd server "
                               f"({holder}); give each server its own --data-dir") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()}\n")
        self._file.flush()

    def release(self) -> None:
        self._file.close()


class JobManager:
    """Runs training jobs for one server; see the module docstring."""

    def __init__(self, config: TrainingConfig, registry: Registry, executor: Executor) -> None:
        self.config = config
        self._registry = registry
        self._executor = executor
        data_dir = Path(config.data_dir)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            (data_dir / "checkpoints").mkdir(exist_ok=True)
            self._lock_file = _DataDirLock(data_dir)
        except OSError as e:
            raise SettingError(f"--data-dir {data_dir} (env LOSSD_DATA_DIR): cannot use it as the data directory "
                               f"({e.strerror or e}); give a folder this user can create and write") from None
        self._checkpoints = data_dir / "checkpoints"
        self.store = JobStore(data_dir / "jobs.sqlite3")
        self._rdzv_store = _rendezvous_store(config.rdzv_endpoint) if config.rdzv_endpoint else None
        self._ctx = _mp_context()
        self._lock = threading.RLock()
        self._queue: deque[str] = deque()
        self._running: dict[str, _Running] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._steps_seen: dict[str, int] = {}  # last step reported per job, for the step-rate metric
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False  # no new jobs or starts
        self._drained = False  # workers gone: watchers send what is stored and end
        self._watchers = 0
        self._no_watchers = asyncio.Event()
        #: Events that could not be written while the data directory was full, in order, with their
        #: seqs already given; written (same seqs) when space returns. Empty otherwise.
        self._held: deque[tuple[str, training_pb2.JobEvent, training_pb2.JobEvent | None]] = deque()
        self._full = False
        self._restarts: dict[str, int] = {}  # worker restarts after a kill -9, per job, in this process
        #: Called with False when the data directory fills up and True when space returns (health).
        self.on_storage: Any = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover jobs a previous run left unfinished and start them.

        The forkserver (which preloads torch, ~2 s) starts with the first job, not here: a server
        that never trains never pays for it.
        """
        self._loop = asyncio.get_running_loop()
        await self._loop.run_in_executor(self._executor, self._recover)

    def _recover(self) -> None:
        self._sweep_checkpoints()
        with self._lock:
            for row in self.store.unfinished():
                if row.state == training_pb2.JOB_STATE_RUNNING:
                    self._record(row.job_id, training_pb2.JobEvent(
                        kind=STATE, state=training_pb2.JOB_STATE_INTERRUPTED, epochs=row.epochs,
                        epoch=row.epoch, step=row.step, total_steps=row.total_steps,
                        message="the server stopped while the job ran; it resumes from its last checkpoint"))
                self._queue.append(row.job_id)
                log.info("job %s (%s) queued to resume", row.job_id, training_pb2.JobState.Name(row.state))
            self._schedule()

    def _sweep_checkpoints(self) -> None:
        """Delete checkpoints (and temp files) of jobs that ended or are unknown: a server stopped
        just as a job ended, or killed while a worker wrote, leaves them behind."""
        for path in self._checkpoints.iterdir():
            job_id = path.name.lstrip(".").split(".", 1)[0]
            if not JOB_ID.fullmatch(job_id):
                continue  # not a name this server makes: not ours to delete
            row = self.store.get_job(job_id)
            if row is None or row.terminal:
                remove_checkpoint(self._checkpoint(job_id))
                log.info("removed the leftover checkpoint of job %s", job_id)

    async def close(self, timeout: float = STOP_GRACE_S) -> None:
        """Stop: running workers checkpoint and end INTERRUPTED (killed after ``timeout``); watchers end."""
        if self._closing:
            return
        self._closing = True
        with self._lock:
            running = list(self._running.values())
            for job in running:
                job.interrupt_requested = True
                if job.control is not None:
                    with contextlib.suppress(OSError):
                        job.control.send_bytes(b"interrupt")
        # Workers get the time up to the last part of ``timeout``; what still runs then is killed, and
        # that part is for the kill to be noticed and recorded: the whole stays within ``timeout``.
        deadline = time.monotonic() + timeout
        margin = min(KILL_MARGIN_S, timeout / 4)
        for job in running:
            if not await _ended(job, max(0.0, deadline - margin - time.monotonic())) and job.process is not None:
                job.process.kill()
        for job in running:
            await _ended(job, max(0.0, deadline - time.monotonic()))
        # Watchers send the events stored so far (the INTERRUPTED ones included), then end their streams.
        self._drained = True
        for event in self._waiters.values():
            event.set()
        self._waiters.clear()
        if self._watchers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._no_watchers.wait(), 2.0)
        self.store.close()
        self._lock_file.release()

    # -- submit, schedule, run ------------------------------------------------------------------

    async def submit(self, request: training_pb2.TrainJobRequest) -> str:
        """Validate and store a job; returns its id. Raises ``FieldError`` for a bad spec or a full queue."""
        if self._closing:
            raise FieldError("", "the server is shutting down; submit the job again after it restarts", "UNAVAILABLE")
        if self._full:
            raise _full_error()
        assert self._loop is not None
        return await self._loop.run_in_executor(self._executor, self._submit, request)

    def _submit(self, request: training_pb2.TrainJobRequest) -> str:
        plan = plan_job(request, self._registry, self.config.limits)
        if plan.nodes > 1 and self._rdzv_store is None:
            raise FieldError("nodes", f"is {plan.nodes}: a job on several machines needs a server started with "
                            "--rdzv-endpoint HOST:PORT (the rendezvous the other machines join)",
                            "FAILED_PRECONDITION")
        check_loss_accepts_model(plan)
        with self._lock:
            waiting = len(self._queue)
            if len(self._running) >= self.config.max_jobs and waiting >= self.config.max_queued_jobs:
                raise FieldError(
                    "",
                    f"{len(self._running)} jobs are running and {waiting} are queued; the server "
                    f"queues at most {self.config.max_queued_jobs} ({flag_name('max_queued_jobs')}) behind "
                    f"{self.config.max_jobs} running ({flag_name('max_jobs')}): retry later",
                    "RESOURCE_EXHAUSTED",
                )
            if self._full:
                raise _full_error()
            job_id = secrets.token_hex(6)
            while self.store.get_job(job_id) is not None:
                job_id = secrets.token_hex(6)
            try:
                self.store.create_job(job_id, request.name, request.SerializeToString(), epochs=plan.epochs,
                                      total_steps=plan.total_steps, encoding=plan.encoding,
                                      world_size=plan.world_size)
            except Exception as e:
                if not is_disk_full(e):
                    raise
                self._storage_full(e)
                raise _full_error() from None
            self._record(job_id, training_pb2.JobEvent(
                kind=STATE, state=training_pb2.JOB_STATE_QUEUED, epochs=plan.epochs, total_steps=plan.total_steps,
                message=f"queued: {plan.total_steps} steps ({plan.epochs} epochs of {len(plan.train_index)} "
                f"samples, batch {plan.batch_size}); {len(plan.val_index)} validation samples"
                + (f"; {plan.world_size} data-parallel ranks" if plan.world_size > 1 else "")
                + (f" on {plan.nodes} machines (the others join with: lossd join {job_id} --rdzv-endpoint "
                   f"{self.config.rdzv_endpoint})" if plan.nodes > 1 else "")))
            self._queue.append(job_id)
            self._schedule()
        return job_id

    def _schedule(self) -> None:
        """Give free slots to queued jobs (caller holds the lock); each starts in a launcher thread,
        so that nobody waits on a process start (seconds while the forkserver is still importing torch)."""
        while self._queue and len(self._running) < self.config.max_jobs and not self._closing and not self._full:
            job_id = self._queue.popleft()
            row = self.store.get_job(job_id, with_spec=True)
            if row is None or row.terminal:
                continue
            job = self._running[job_id] = _Running(job_id)
            threading.Thread(target=self._launch, args=(job, row), daemon=True, name=f"lossd-launch-{job_id}").start()

    def _launch(self, job: _Running, row: JobRow) -> None:
        """Start the worker process for ``job``, then relay its events (this thread becomes its monitor)."""
        try:
            control_r, control_w = self._ctx.Pipe(duplex=False)
            events_r, events_w = self._ctx.Pipe(duplex=False)
            process = self._ctx.Process(
                target=worker_main, name=f"lossd-job-{row.job_id}", daemon=True,
                args=(row.job_id, row.spec, str(self._checkpoint(row.job_id)), self.config.plugins, control_r,
                      events_w, self.config.rdzv_endpoint),
            )
            process.start()
        except Exception as e:  # e.g. the OS refused a process
            log.exception("could not start a worker for job %s", job.job_id)
            with self._lock:
                self._running.pop(job.job_id, None)
                with contextlib.suppress(Exception):
                    self._record(job.job_id, training_pb2.JobEvent(
                        kind=STATE, state=training_pb2.JOB_STATE_FAILED,
                        message=f"could not start a worker process ({type(e).__name__})"))
                self._schedule()
            self._settled(job)
            return
        control_r.close()
        events_w.close()
        with self._lock:
            job.process, job.control, job.events = process, control_w, events_r
            for wanted, message in ((job.interrupt_requested, b"interrupt"), (job.cancel_requested, b"cancel")):
                if wanted:
                    with contextlib.suppress(OSError):
                        control_w.send_bytes(message)
        log.info("job %s started in worker pid %s", row.job_id, process.pid)
        self._monitor(job)

    def _checkpoint(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):  # never a path from anything but a server-made id
            raise ValueError(f"not a job id: {job_id!r}")
        return self._checkpoints / f"{job_id}.pt"

    def _monitor(self, job: _Running) -> None:
        """Relay one worker's events until it ends; then settle the job's state and start the next."""
        assert job.events is not None and job.control is not None
        ended = False
        try:
            while True:
                event = training_pb2.JobEvent.FromString(job.events.recv_bytes())
                final = event.kind == STATE and event.state in FINAL_STATES
                with self._lock:
                    if final and event.state == training_pb2.JOB_STATE_INTERRUPTED and \
                            event.message.startswith(DISK_FULL) and not job.interrupt_requested:
                        job.disk_full = True  # its checkpoint did not fit: the directory is full
                        self._storage_full(OSError(errno.ENOSPC, "the worker could not write its checkpoint"))
                    self._record(job.job_id, event)
                if final:
                    ended = True
                    break
        except (EOFError, OSError):
            pass
        except Exception:
            log.exception("job %s: bad message from its worker", job.job_id)
        job.process.join(STOP_GRACE_S)
        if job.process.is_alive():
            job.process.kill()
            job.process.join(5)
        job.events.close()
        job.control.close()
        with self._lock:
            self._running.pop(job.job_id, None)
            if not ended:
                code = job.process.exitcode
                if job.cancel_requested:
                    event = training_pb2.JobEvent(kind=STATE, state=training_pb2.JOB_STATE_CANCELLED,
                                                  message="cancelled (the worker was stopped)")
                elif job.disk_full and not self._closing:
                    event = training_pb2.JobEvent(kind=STATE, state=training_pb2.JOB_STATE_INTERRUPTED,
                                                  message=f"{DISK_FULL}: the job resumes from its last checkpoint "
                                                  "once space is freed")
                elif self._closing or job.interrupt_requested:
                    event = training_pb2.JobEvent(kind=STATE, state=training_pb2.JOB_STATE_INTERRUPTED,
                                                  message="server shutting down; the job resumes from its last "
                                                  "checkpoint when the server restarts")
                elif code == -signal.SIGKILL and self._restarts.get(job.job_id, 0) < self.config.max_job_restarts:
                    self._restarts[job.job_id] = self._restarts.get(job.job_id, 0) + 1
                    event = training_pb2.JobEvent(
                        kind=STATE,
                        state=training_pb2.JOB_STATE_INTERRUPTED,
                        message=f"the worker process was killed (signal 9: out of memory?); "
                        f"restart {self._restarts[job.job_id]} of at most "
                        f"{self.config.max_job_restarts} ({flag_name('max_job_restarts')}): the job "
                        "resumes from its last checkpoint",
                    )
                    job.restart = True
                else:
                    event = training_pb2.JobEvent(kind=STATE, state=training_pb2.JOB_STATE_FAILED,
                                                  message=_exit_reason(code, self._restarts.get(job.job_id, 0),
                                                                       self.config.max_job_restarts))
                with contextlib.suppress(Exception):
                    self._record(job.job_id, event)
            if (job.disk_full or job.restart) and not self._closing and not job.cancel_requested:
                self._queue.appendleft(job.job_id)  # resumes from its checkpoint (when space returns)
            row = self.store.get_job(job.job_id) if not self._closing else None
            if row is not None and row.terminal:
                remove_checkpoint(self._checkpoint(job.job_id))
                self._restarts.pop(job.job_id, None)
            self._schedule()
        self._settled(job)

    def _settled(self, job: _Running) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(job.ended.set)

    def _record(self, job_id: str, event: training_pb2.JobEvent) -> training_pb2.JobEvent:
        """Store an event (its parameters into results) and wake the job's watchers."""
        parameters = None
        if event.parameters:
            parameters = training_pb2.JobEvent()
            for name in event.parameters:
                parameters.parameters[name].CopyFrom(event.parameters[name])
            event.ClearField("parameters")
        if self._held:  # in order: nothing is written while earlier events wait
            return self._hold(job_id, event, parameters)
        try:
            stored = self.store.append_event(job_id, event, parameters)
        except Exception as e:
            if not is_disk_full(e):
                raise
            self._storage_full(e)
            return self._hold(job_id, event, parameters)
        self._count(job_id, stored)
        self._wake(job_id)
        return stored

    # -- a full data directory --------------------------------------------------------------------

    def _hold(self, job_id: str, event: training_pb2.JobEvent,
              parameters: training_pb2.JobEvent | None) -> training_pb2.JobEvent:
        """Keep an event that cannot be written (caller holds the lock), numbered as the store will
        number it: watchers and GetJob see it now, the store gets it when space returns."""
        row = self.store.get_job(job_id)
        base = row.last_seq if row is not None else 0
        if not event.HasField("time"):
            event.time.GetCurrentTime()
        event.job_id = job_id
        event.seq = base + 1 + sum(1 for j, _, _ in self._held if j == job_id)
        self._held.append((job_id, event, parameters))
        self._wake(job_id)
        return event

    def _storage_full(self, error: BaseException) -> None:
        """The data directory filled up (caller holds the lock): TrainingService turns NOT_SERVING, new
        jobs are refused, running ones stop (INTERRUPTED, re-queued), and a thread writes what is held
        once space returns."""
        if self._full:
            return
        self._full = True
        log.error("%s (%s): training jobs stop and resume once space is freed; TrainingService is NOT_SERVING",
                  DISK_FULL, error)
        for job in self._running.values():
            job.disk_full = job.interrupt_requested = True
            if job.control is not None:
                with contextlib.suppress(OSError):
                    job.control.send_bytes(b"interrupt")
        self._notify_storage(False)
        threading.Thread(target=self._retry_storage, daemon=True, name="lossd-storage-retry").start()

    def _retry_storage(self) -> None:
        """Every ``STORAGE_RETRY_S`` seconds, write the held events; once all are written (and a probe
        file fits), serve again: health SERVING, queued jobs start."""
        while not self._closing:
            time.sleep(STORAGE_RETRY_S)
            with self._lock:
                if self._closing:
                    return
                try:
                    while self._held:
                        job_id, event, parameters = self._held[0]
                        stored = self.store.append_event(job_id, event, parameters)
                        self._held.popleft()
                        self._count(job_id, stored)
                        self._wake(job_id)
                    self._probe_space()
                except Exception as e:
                    if not is_disk_full(e):
                        log.exception("writing held job events failed")
                    continue
                self._full = False
                log.info("the data directory has space again: held job events written, jobs resume")
                self._notify_storage(True)
                self._schedule()
                return

    def _probe_space(self) -> None:
        """Raise ``OSError`` (ENOSPC) unless a 1 MiB file fits in the data directory."""
        probe = Path(self.config.data_dir) / ".space-probe"
        try:
            with open(probe, "wb") as f:
                f.write(bytes(1 << 20))
                f.flush()
                os.fsync(f.fileno())
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def _notify_storage(self, writable: bool) -> None:
        callback = self.on_storage
        if callback is not None:
            try:
                callback(writable)
            except Exception:
                log.exception("storage health callback failed")

    def _held_after(self, job_id: str, after_seq: int) -> list[training_pb2.JobEvent]:
        with self._lock:
            return [training_pb2.JobEvent.FromString(e.SerializeToString())
                    for j, e, _ in self._held if j == job_id and e.seq > after_seq]

    @property
    def storage_full(self) -> bool:
        """Whether the data directory is full (events are held in memory; TrainingService NOT_SERVING)."""
        return self._full

    def _count(self, job_id: str, event: training_pb2.JobEvent) -> None:
        """Feed the job metrics (no-ops while metrics are off): jobs by state, steps done.

        Steps are counted from a job's QUEUED event on; a job resumed after a restart
        counts from its first event in this process.
        """
        if event.kind == STATE and event.state == training_pb2.JOB_STATE_QUEUED:
            self._steps_seen[job_id] = 0
        if event.step:
            previous = self._steps_seen.get(job_id)
            if previous is not None:
                _metrics.add_job_steps(event.step - previous)
            self._steps_seen[job_id] = event.step
        if event.kind == STATE:
            _metrics.set_jobs_by_state(self.store.count_by_state())
            if event.state in TERMINAL_STATES:
                self._steps_seen.pop(job_id, None)

    def _wake(self, job_id: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._set_waiter, job_id)

    def _set_waiter(self, job_id: str) -> None:
        event = self._waiters.pop(job_id, None)
        if event is not None:
            event.set()

    # -- queries --------------------------------------------------------------------------------

    async def _io(self, fn: Any, *args: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(None, fn, *args)

    async def job(self, job_id: str, with_spec: bool = False) -> JobRow:
        """The job's row; ``FieldError`` INVALID_ARGUMENT / NOT_FOUND for a bad or unknown id."""
        if not JOB_ID.fullmatch(job_id):
            shown = repr(job_id) if len(job_id) <= 64 else f"{job_id[:64]!r}... ({len(job_id)} characters)"
            raise FieldError("job_id", f"{shown} is not a job id (12 lowercase hex digits, as in the job's events)")
        row: JobRow | None = await self._io(self.store.get_job, job_id, with_spec)
        if row is not None and self._held:
            row = self._with_held(row)
        if row is None:
            close = await self._io(self._close_ids, job_id)
            hint = f"; did you mean {', '.join(close)}?" if close else " (ListJobs lists the jobs)"
            raise FieldError("job_id", f"no job {job_id!r}{hint}", "NOT_FOUND")
        return row

    def _with_held(self, row: JobRow) -> JobRow:
        """``row`` as its held events (a full data directory) leave it: state, message, last seq."""
        held = self._held_after(row.job_id, row.last_seq)
        for event in held:
            changes: dict[str, Any] = {"last_seq": event.seq}
            if event.kind == STATE:
                changes.update(state=event.state, message=event.message)
            row = dataclasses.replace(row, **changes)
        return row

    def _close_ids(self, job_id: str) -> list[str]:
        """Up to three stored job ids like ``job_id`` (off the event loop: the store may hold many)."""
        return difflib.get_close_matches(job_id, self.store.job_ids(), n=3, cutoff=0.5)

    async def list_jobs(self, states: Sequence[int], limit: int) -> list[JobRow]:
        """Jobs, newest first."""
        rows: list[JobRow] = await self._io(self.store.list_jobs, states, limit)
        return rows

    async def parameters(self, row: JobRow, encoding: int) -> dict[str, lossd_pb2.Tensor]:
        """The ended job's trained parameters, encoded as asked (default: as its spec says)."""
        result: training_pb2.JobEvent | None = await self._io(self.store.result, row.job_id)
        if result is None:
            return {}
        return _encoded(result.parameters, reply_encoding(encoding, row.encoding))

    async def watch(self, job_id: str, after_seq: int, encoding: int = 0) -> AsyncIterator[training_pb2.JobEvent]:
        """Stored events after ``after_seq``, then live ones, until the terminal event (or the server stops)."""
        row = await self.job(job_id)
        if after_seq < 0:
            raise FieldError("after_seq", f"is {after_seq}; must be >= 0")
        wanted = reply_encoding(encoding, row.encoding)
        self._watchers += 1
        self._no_watchers.clear()
        try:
            async for event in self._watch(job_id, after_seq, wanted):
                yield event
        except sqlite3.ProgrammingError:  # the store closed under a watcher that did not keep up
            if not self._closing:
                raise
        finally:
            self._watchers -= 1
            if not self._watchers:
                self._no_watchers.set()

    async def _watch(self, job_id: str, after_seq: int, wanted: str) -> AsyncIterator[training_pb2.JobEvent]:
        last = after_seq
        while True:
            waiter = self._waiters.setdefault(job_id, asyncio.Event())
            events: list[training_pb2.JobEvent] = await self._io(self.store.events_after, job_id, last)
            if not events and self._held:  # the data directory is full: events held in memory
                events = self._held_after(job_id, last)
            for event in events:
                last = event.seq
                terminal = event.kind == STATE and event.state in TERMINAL_STATES
                if terminal and event.state != training_pb2.JOB_STATE_FAILED:
                    result = await self._io(self.store.result, job_id)
                    if result is not None:
                        for name, t in _encoded(result.parameters, wanted).items():
                            event.parameters[name].CopyFrom(t)
                yield event
                if terminal:
                    return
            if events:
                continue
            if self._drained:
                return
            row = await self._io(self.store.get_job, job_id)
            if row is None or (row.terminal and last >= row.last_seq):
                return
            await waiter.wait()

    async def cancel(self, job_id: str) -> JobRow:
        """Cancel a job that has not ended; returns its row once it has."""
        row = await self.job(job_id)
        if row.terminal:
            raise FieldError("job_id", f"job {job_id} already ended {training_pb2.JobState.Name(row.state)[10:]}; "
                            "only queued, running or interrupted jobs can be cancelled", "FAILED_PRECONDITION")
        assert self._loop is not None
        job = await self._loop.run_in_executor(None, self._cancel, job_id)
        if job is not None and not await _ended(job, STOP_GRACE_S) and job.process is not None:
            job.process.kill()
            await _ended(job, STOP_GRACE_S)
        return await self.job(job_id)

    def _cancel(self, job_id: str) -> _Running | None:
        with self._lock:
            if job_id in self._queue:
                self._queue.remove(job_id)
                self._record(job_id, training_pb2.JobEvent(kind=STATE, state=training_pb2.JOB_STATE_CANCELLED,
                                                           message="cancelled before it ran"))
                remove_checkpoint(self._checkpoint(job_id))
                return None
            job = self._running.get(job_id)
            if job is not None:
                job.cancel_requested = True
                if job.control is not None:
                    with contextlib.suppress(OSError):
                        job.control.send_bytes(b"cancel")
            return job

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` has begun."""
        return self._closing

    @property
    def watchers(self) -> int:
        """Event streams (TrainJob, WatchJob) being served now."""
        return self._watchers

    @property
    def running(self) -> list[str]:
        """Ids of the jobs running now."""
        with self._lock:
            return list(self._running)


def _full_error() -> FieldError:
    return FieldError("", f"{DISK_FULL}: the server cannot store new jobs until space is freed in its data directory "
                     "(--data-dir); running jobs resume then", "RESOURCE_EXHAUSTED")


def _exit_reason(code: int | None, restarts: int, max_restarts: int) -> str:
    """Why a job failed when its worker ended without a final event."""
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        text = f"the worker process was killed by signal {-code} ({name})"
        if code == -signal.SIGKILL:
            text += (f" (out of memory?) after {restarts} restart(s) from its checkpoint; --max-job-restarts is "
                     f"{max_restarts}")
        return text
    return f"the worker process exited unexpectedly (exit code {code})"


def _rendezvous_store(endpoint: str) -> Any:
    """Host the c10d ``TCPStore`` that the machines of multi-node jobs meet on (keys by job id)."""
    import torch.distributed as dist

    host, _, port = endpoint.rpartition(":")
    store = dist.TCPStore(host, int(port), None, True, wait_for_workers=False, multi_tenant=True)
    log.info("rendezvous for multi-node jobs on %s (c10d TCPStore)", endpoint)
    return store


async def _ended(job: _Running, timeout: float) -> bool:
    """Wait (without holding a thread) until ``job`` has settled; ``False`` after ``timeout`` seconds."""
    try:
        await asyncio.wait_for(job.ended.wait(), timeout)
    except asyncio.TimeoutError:
        return False
    return True


def _encoded(parameters: Any, encoding: str) -> dict[str, lossd_pb2.Tensor]:
    """Stored (raw) parameter tensors in ``encoding``."""
    if encoding == "raw":
        return {name: parameters[name] for name in parameters}
    out = {}
    for name in parameters:
        tensor, _ = decode_tensor(parameters[name], f"parameters.{name}", max_elements=2**62)
        out[name] = encode_tensor(tensor, "values")
    return out
