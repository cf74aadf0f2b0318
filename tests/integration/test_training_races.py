"""Races between the calls of TrainingService and what changes a job under them (the 2026-12-05 audit): a job
deleted (DeleteJob, ``--job-retention``) while its events stream or while it is read, a job that ends between
DeleteJob's two reads, the job store closed by a shutdown under calls in flight, the forkserver killed under
running workers. Each race is made to happen, every time, by a hook on the server's store (in-process servers:
the store is an attribute of the server's job manager) rather than by timing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError

from lossd._wire import FieldError
from lossd.v1 import training_pb2_grpc
from lossd.v1 import training_pb2 as pb
from support.procstat import wait_for
from support.servers import ServedProcess, scratch_dir, serve_in_thread
from support.training import request as job_request
from support.training import small_spec

DELETED = "was deleted (DeleteJob or --job-retention) while it was being watched"


@contextlib.contextmanager
def _served(**config: object) -> Iterator[tuple[training_pb2_grpc.TrainingServiceStub, Any, str]]:
    """An in-process server (as ``start_in_process``), its TrainingService stub, the server itself (its ``jobs``:
    the job manager, whose ``store`` the tests hook) and its address."""
    from lossd.server import ServerConfig, create_server

    served: dict[str, Any] = {}

    async def build() -> Any:
        settings = {"device": "cpu", "plugins": "none", "data_dir": data_dir, **config}
        served["server"] = await create_server(ServerConfig(host="127.0.0.1", port=0, **settings))  # type: ignore[arg-type]
        return served["server"]

    with scratch_dir("lossd-data-") as data_dir, serve_in_thread(build) as port, \
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield training_pb2_grpc.TrainingServiceStub(channel), served["server"], f"127.0.0.1:{port}"


def _store_url(kind: str, request: pytest.FixtureRequest) -> str:
    """``--job-store`` for ``kind``: "" (SQLite in the data directory) or a fresh PostgreSQL database."""
    return "" if kind == "sqlite" else str(request.getfixturevalue("postgres").fresh_database())


def _succeeded(stub: training_pb2_grpc.TrainingServiceStub) -> list[pb.JobEvent]:
    """The events of a small job, run to its end (SUCCEEDED, with parameters)."""
    events = [r.event for r in stub.TrainJob(job_request(small_spec()), timeout=120)]
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED and events[-1].parameters, events[-1]
    return events


def _after_read(store: Any, names: tuple[str, ...], job_id: str, then: Callable[[], None]) -> None:
    """Run ``then()`` once, just after the first read of ``job_id`` by any of the store's methods ``names`` (those
    a store lacks are left alone): what another call (a DeleteJob) does between two reads."""
    done = threading.Lock()

    def hooked(original: Callable[..., Any]) -> Callable[..., Any]:
        def read(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if args[0] == job_id and done.acquire(blocking=False):
                then()
            return out
        return read

    for name in names:
        if hasattr(store, name):
            setattr(store, name, hooked(getattr(store, name)))


# -- a job deleted while its events stream -------------------------------------------------------------------


@pytest.mark.parametrize(("how", "kind"), [("WatchJob", "sqlite"), ("client.watch", "sqlite"),
                                           ("client.train", "sqlite"), ("WatchJob", "postgres")])
def test_a_job_deleted_while_its_events_stream_ends_the_stream_not_found(how: str, kind: str,
                                                                          request: pytest.FixtureRequest) -> None:
    """The stream had sent part of the history (the watcher reads it in batches) when DeleteJob took the job: it
    ended OK, as if the history were whole, without the terminal event (512 of 703 events, in the audit). It
    ends NOT_FOUND, saying so; the SDK raises ``NotFound`` (``train`` raised ``Unavailable``, "the stream ...
    ended before the job did", and ``watch`` just stopped)."""
    from lossd.client import Client, NotFound

    with _served(max_jobs=1, job_store=_store_url(kind, request)) as (stub, server, address):
        store = server.jobs.store
        original = store.events_after
        armed, gated, go = threading.Event(), threading.Event(), threading.Event()
        reads: dict[str, int] = {}

        def events_after(job_id: str, after_seq: int, limit: int = 256) -> list[pb.JobEvent]:
            if not armed.is_set():
                return original(job_id, after_seq, limit)
            reads[job_id] = reads.get(job_id, 0) + 1
            if reads[job_id] == 2:  # the watcher has sent what it read first: it waits here for the deletion
                gated.set()
                assert go.wait(60)
            return original(job_id, after_seq, 1)  # one event a read: a long history's batches, in small

        store.events_after = events_after
        outcome: dict[str, Any] = {}
        if how == "client.train":
            def train() -> None:
                with Client(address) as client:
                    try:
                        outcome["result"] = client.train(small_spec(), progress=False, timeout=120)
                    except Exception as e:
                        outcome["error"] = e
            armed.set()
            thread = threading.Thread(target=train)
            thread.start()
            assert gated.wait(60), "the stream did not start"
            [job_id] = reads
            assert wait_for(lambda: stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job.state
                            == pb.JOB_STATE_SUCCEEDED, 60, 0.05)  # the worker runs on; the stream waits
            stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id), timeout=30)
            go.set()
            thread.join(60)
            error = outcome.get("error")
            assert isinstance(error, NotFound), outcome
            assert DELETED in str(error), error
            return
        job_id = _succeeded(stub)[0].job_id
        armed.set()
        if how == "WatchJob":
            stream = stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=60)
            assert next(stream).event.seq == 1
            assert gated.wait(60)
            stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id), timeout=30)
            go.set()
            with pytest.raises(grpc.RpcError) as info:
                rest = [r.event for r in stream]
                pytest.fail(f"the stream ended OK after {1 + len(rest)} events")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value
            assert f"job {job_id} {DELETED}" in (info.value.details() or "")
            return
        with Client(address) as client:
            events = client.watch(job_id, timeout=60)
            assert next(events).seq == 1
            assert gated.wait(60)
            client.delete_job(job_id)
            go.set()
            with pytest.raises(NotFound, match=re.escape(DELETED)):
                list(events)


# -- a job read while it is deleted -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("read", ["GetJob with parameters", "WatchJob's terminal event", "WatchJob of an ended job"])
def test_a_job_deleted_while_it_is_read_is_found_whole_or_not_at_all(read: str, kind: str,
                                                                      request: pytest.FixtureRequest) -> None:
    """DeleteJob between two reads of one answer: GetJob(include_parameters) read the row, then the parameters
    were gone: OK SUCCEEDED without parameters; a watcher read the terminal event, then its parameters were gone:
    the terminal event without them; a watcher found the job, then no events: OK and empty. Now the row and its
    parameters are read together, and a watched job found gone is NOT_FOUND."""
    with _served(max_jobs=1, job_store=_store_url(kind, request)) as (stub, server, _):
        events = _succeeded(stub)
        job_id, final = events[0].job_id, events[-1]
        # The worker's monitor reads the job once more after its end (under the manager's lock, as it forgets
        # it): hooked, that read, not this test's call, would meet the deletion
        assert wait_for(lambda: job_id not in server.jobs._running, 30)
        with server.jobs._lock:
            pass
        store = server.jobs.store
        delete = store.delete_job

        def deleted() -> None:
            assert delete(job_id) is not None

        if read == "GetJob with parameters":
            _after_read(store, ("get_job", "job_and_result"), job_id, deleted)
            try:
                reply = stub.GetJob(pb.GetJobRequest(job_id=job_id, include_parameters=True), timeout=30)
            except grpc.RpcError as e:  # read after the deletion: gone whole
                assert e.code() == grpc.StatusCode.NOT_FOUND, e
            else:  # read before it: whole
                assert reply.job.state == pb.JOB_STATE_SUCCEEDED and reply.parameters == final.parameters, reply.job
            return
        if read == "WatchJob's terminal event":
            _after_read(store, ("events_after",), job_id, deleted)
            after = final.seq - 1
        else:
            _after_read(store, ("get_job",), job_id, deleted)
            after = 1
        got: list[pb.JobEvent] = []
        with pytest.raises(grpc.RpcError) as info:
            for reply in stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=after), timeout=30):
                got.append(reply.event)
            pytest.fail(f"the stream ended OK with {[(e.seq, e.state, len(e.parameters)) for e in got]}")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value
        assert DELETED in (info.value.details() or "")
        assert got == []  # nothing sent: the terminal event never goes without its parameters


# -- DeleteJob of a job that ends between its two reads ------------------------------------------------------


def test_delete_job_of_a_job_that_ended_between_its_reads_deletes_it() -> None:
    """DeleteJob read the job RUNNING, and it had ended when the refusal was worded: "job X is SUCCEEDED: only
    ended jobs ... can be deleted; cancel it first". The ended job is deleted then; a refusal names the state that
    refused it (the existing test: QUEUED)."""
    with _served(max_jobs=1) as (stub, server, _):
        job_id = _succeeded(stub)[0].job_id
        store = server.jobs.store
        original, first = store.get_job, threading.Lock()

        def get_job(job: str, with_spec: bool = False) -> Any:
            row = original(job, with_spec)
            if job == job_id and row is not None and first.acquire(blocking=False):  # as it was a moment before
                return dataclasses.replace(row, state=pb.JOB_STATE_RUNNING, message="running")
            return row

        store.get_job = get_job
        deleted = stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id), timeout=30).job
        assert (deleted.job_id, deleted.state) == (job_id, pb.JOB_STATE_SUCCEEDED)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("raised", "code", "said"), [
    (sqlite3.OperationalError("database or disk is full"), grpc.StatusCode.RESOURCE_EXHAUSTED,
     "data directory full: the job store cannot record this until space is freed"),
    (sqlite3.DatabaseError("database disk image is malformed"), grpc.StatusCode.DATA_LOSS,
     "the job store is damaged where this call read it"),
    (DecodeError("Error parsing message with type 'lossd.v1.JobEvent'"), grpc.StatusCode.DATA_LOSS,
     "the job store is damaged where this call read it"),
])
def test_a_full_or_damaged_store_is_said_so_by_every_job_call(raised: Exception, code: grpc.StatusCode,
                                                                said: str) -> None:
    """An audit filled the data directory and damaged pages of jobs.sqlite3 the start had not read: DeleteJob
    (the way to free space) answered INTERNAL, WatchJob UNKNOWN with the exception's class ("Unexpected <class
    'sqlite3.DatabaseError'>"), GetJob INTERNAL."""
    with _served(max_jobs=1) as (stub, server, _):
        job_id = _succeeded(stub)[0].job_id
        store = server.jobs.store

        def fails(*args: Any, **kwargs: Any) -> Any:
            raise raised

        store.delete_job = store.events_after = store.get_job = fails
        for call in (lambda: stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id), timeout=30),
                     lambda: list(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=30)),
                     lambda: stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30)):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert (info.value.code(), info.value.details()[:len(said)]) == (code, said), info.value


# -- the job store closed under calls in flight (SIGTERM) ---------------------------------------------------


JOB = "0123456789ab"


def _manager_on(data: Path) -> Any:
    """A job manager on ``data``, whose store holds one ended job (JOB, with parameters): nothing to run."""
    from lossd.server.losses import REGISTRY
    from lossd.server.training import JobManager, SQLiteJobStore, TrainingConfig

    data.mkdir(parents=True, exist_ok=True)
    store = SQLiteJobStore(data / "jobs.sqlite3")
    store.create_job(JOB, "", b"", epochs=1, total_steps=1, encoding="raw",
                     first=pb.JobEvent(kind=pb.JOB_EVENT_KIND_STATE, state=pb.JOB_STATE_QUEUED))
    result = pb.JobEvent()
    result.parameters["w"].raw = b"\x00\x00\x80?"
    store.append_event(JOB, pb.JobEvent(kind=pb.JOB_EVENT_KIND_STATE, state=pb.JOB_STATE_SUCCEEDED),
                       parameters=result)
    store.close()
    return JobManager(TrainingConfig(data_dir=data), REGISTRY, ThreadPoolExecutor(2))


def _held(manager: Any) -> tuple[threading.Event, threading.Event]:
    """Hold the next read of JOB (``get_job``) until the second event is set; the first says it is held."""
    entered, release = threading.Event(), threading.Event()
    original = manager.store.get_job

    def get_job(job_id: str, with_spec: bool = False) -> Any:
        if job_id == JOB and not entered.is_set():
            entered.set()
            release.wait(30)
        return original(job_id, with_spec)

    manager.store.get_job = get_job
    return entered, release


async def _unavailable_after_close(manager: Any) -> None:
    """Every call after the store closed answers UNAVAILABLE, saying the server is shutting down."""

    async def watch() -> None:
        async for _ in manager.watch(JOB, 0):
            pass

    calls = {"GetJob": lambda: manager.job(JOB), "GetJob with parameters": lambda: manager.job_with_parameters(JOB, 0),
             "DeleteJob": lambda: manager.delete(JOB), "CancelJob": lambda: manager.cancel(JOB),
             "ListJobs": lambda: manager.list_jobs([], 10), "WatchJob": watch}
    for name, call in calls.items():
        with pytest.raises(FieldError) as info:
            await call()
        assert (info.value.code, info.value.message) == ("UNAVAILABLE", "the server is shutting down; retry"), name


def test_a_call_in_flight_when_the_store_closes_is_answered_first(tmp_path: Path) -> None:
    """SIGTERM closed the job store under calls in flight (GetJob, CancelJob, DeleteJob, WatchJob's first read):
    they answered UNKNOWN, "Cannot operate on a closed database". The close waits for them (a short while), and
    a call that comes after it is UNAVAILABLE ("the server is shutting down; retry": the SDK retries it)."""
    manager = _manager_on(tmp_path / "data")

    async def scenario() -> None:
        await manager.start()
        entered, release = _held(manager)
        in_flight = asyncio.create_task(manager.job(JOB))
        assert await asyncio.get_running_loop().run_in_executor(None, entered.wait, 30)
        closing = asyncio.create_task(manager.close(timeout=1.0))
        await asyncio.sleep(0.5)
        assert not closing.done(), "the store closed under a call in flight"
        release.set()
        assert (await in_flight).state == pb.JOB_STATE_SUCCEEDED
        await asyncio.wait_for(closing, 10)
        await _unavailable_after_close(manager)

    asyncio.run(scenario())


def test_a_call_that_outlasts_the_wait_for_the_store_answers_unavailable(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A call still in flight when the close has waited long enough (``IO_DRAIN_S``) meets a closed store: it
    answers UNAVAILABLE, never the closed database's error (UNKNOWN)."""
    from lossd.server.training import _manager

    monkeypatch.setattr(_manager, "IO_DRAIN_S", 0.2)
    manager = _manager_on(tmp_path / "data")

    async def scenario() -> None:
        await manager.start()
        entered, release = _held(manager)
        in_flight = asyncio.create_task(manager.job(JOB))
        assert await asyncio.get_running_loop().run_in_executor(None, entered.wait, 30)
        await asyncio.wait_for(manager.close(timeout=1.0), 10)
        release.set()
        with pytest.raises(FieldError) as info:
            await in_flight
        assert (info.value.code, info.value.message) == ("UNAVAILABLE", "the server is shutting down; retry")
        await _unavailable_after_close(manager)

    asyncio.run(scenario())


# -- the forkserver killed under a running worker ------------------------------------------------------------

#: Runs for minutes unless stopped: an epoch (and its checkpoint) every 30 steps.
ENDLESS = small_spec(epochs=10_000, batch_size=10, metrics=[], step_events_per_second=50)


def _worker_pids(served: ServedProcess, job_id: str) -> list[int]:
    return [int(m.group(1)) for line in list(served.log)
            if (m := re.search(rf"job {job_id} started in worker pid (\d+)", line))]


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find the forkserver (Linux)")
def test_a_job_whose_forkserver_was_killed_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """kill -9 of the multiprocessing forkserver (the server's child whose children are the workers): its workers
    die with it (PR_SET_PDEATHSIG), and their exit status is lost (255). The job failed, "the worker process
    exited unexpectedly (exit code 255)"; it resumes from its checkpoint as after a worker's SIGKILL, counted
    against --max-job-restarts, with a message naming the forkserver; killed once more, it fails saying so. A
    later job starts (a new forkserver)."""
    with ServedProcess.start(tmp_path, "--data-dir", str(tmp_path / "data"), "--max-jobs", "1",
                             "--max-job-restarts", "1", "--plugins", "none") as served, \
            grpc.insecure_channel(served.address) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        stream = stub.TrainJob(job_request(ENDLESS), timeout=180)
        forkservers = []
        for reply in stream:
            if reply.event.kind == pb.JOB_EVENT_KIND_EPOCH and reply.event.epoch == 1:
                break  # its checkpoint is on disk
        job_id = reply.event.job_id
        for kills in (1, 2):
            assert wait_for(lambda: len(_worker_pids(served, job_id)) == kills, 60, 0.05), served.report()
            forkservers.append(_parent(_worker_pids(served, job_id)[-1]))
            assert forkservers[-1] != served.proc.pid  # the worker's parent is the forkserver, not the server
            if kills == 2:  # the resumed worker has trained past its checkpoint
                assert wait_for(lambda: stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job.resumes == 1,
                                60, 0.05)
            os.kill(forkservers[-1], signal.SIGKILL)
        states = [(e.state, e.message) for e in (r.event for r in stream) if e.kind == pb.JOB_EVENT_KIND_STATE]
        assert [s for s, _ in states] == [pb.JOB_STATE_INTERRUPTED, pb.JOB_STATE_RUNNING, pb.JOB_STATE_FAILED], states
        assert states[0][1] == (f"the worker's forkserver (pid {forkservers[0]}) was killed, and the worker with it "
                                "(its exit status was lost); restart 1 of at most 1 (--max-job-restarts): the job "
                                "resumes from its last checkpoint"), states[0][1]
        assert states[1][1].startswith("resumed from the checkpoint at step"), states[1][1]
        assert states[2][1] == (f"the worker's forkserver (pid {forkservers[1]}) was killed, and the worker with it "
                                "(its exit status was lost) after 1 restart(s) from its checkpoint; "
                                "--max-job-restarts is 1"), states[2][1]
        assert forkservers[0] != forkservers[1]  # the resumed job had a new forkserver
        started = time.monotonic()
        final = [r.event for r in stub.TrainJob(job_request(small_spec()), timeout=120)][-1]
        assert final.state == pb.JOB_STATE_SUCCEEDED, (final.message, time.monotonic() - started)


def test_only_a_kill_from_outside_resumes_the_job() -> None:
    """What resumes from the checkpoint (``--max-job-restarts``): SIGKILL (the OOM killer) and a forkserver's lost
    exit status (255: the forkserver died, and its workers with it). The job's own ends fail it: an exit status,
    another signal (a crash), and 255 where no forkserver forked the worker (``spawn``: a real exit status)."""
    import multiprocessing

    from lossd.server.training._manager import _exit_reason, _killed_from_outside

    spawn, forkserver = multiprocessing.get_context("spawn"), multiprocessing.get_context("forkserver")
    assert _killed_from_outside(-signal.SIGKILL, None, spawn) == "the worker process was killed (signal 9: out of memory?)"
    for code in (1, 255, -signal.SIGSEGV, -signal.SIGABRT, None):
        assert _killed_from_outside(code, None, spawn) == "", code
    for code in (1, -signal.SIGSEGV, None):
        assert _killed_from_outside(code, 4321, forkserver) == "", code
    assert _exit_reason(255, 0, 1) == "the worker process exited unexpectedly (exit code 255)"
    assert _exit_reason(255, 1, 1, "the worker's forkserver (pid 7) was killed") == (
        "the worker's forkserver (pid 7) was killed after 1 restart(s) from its checkpoint; --max-job-restarts is 1")
