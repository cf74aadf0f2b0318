"""A training server and what its data directory holds, on in-process servers: the ``lossd_jobs`` gauge counts
the jobs of the store (found at start, deleted by DeleteJob or ``--job-retention``, cancelled while queued),
not only the state changes this process saw; jobs still run after ``<data-dir>/checkpoints`` was removed."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from lossd.server._metrics import Metrics
from lossd.server.training import _manager
from lossd.v1 import training_pb2_grpc
from lossd.v1 import training_pb2 as pb
from support.servers import start_in_process
from support.training import request, small_spec

#: A job that runs until cancelled.
LONG = small_spec(data={"builtin": {"name": "rings"}}, epochs=500, batch_size=100, metrics=[])


def _gauge(metrics: Metrics) -> dict[str, float]:
    """``lossd_jobs`` by state, the states at 0 left out."""
    found = re.findall(r'^lossd_jobs\{state="(\w+)"\} (\S+)$', metrics.exposition(), re.M)
    return {state: float(value) for state, value in found if float(value)}


def _settles(metrics: Metrics, expected: dict[str, float], timeout: float = 30) -> dict[str, float]:
    """The gauge once it reads ``expected`` (a job's last state is counted just after its stream ends), or as
    it reads at ``timeout``."""
    deadline = time.monotonic() + timeout
    while (seen := _gauge(metrics)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return seen


def _run(stub: training_pb2_grpc.TrainingServiceStub, spec: dict[str, object]) -> pb.JobEvent:
    return [r.event for r in stub.TrainJob(request(spec), timeout=120)][-1]


def _submit(stub: training_pb2_grpc.TrainingServiceStub, spec: dict[str, object]) -> str:
    detached = request(spec)
    detached.detach = True
    return [r.event for r in stub.TrainJob(detached, timeout=60)][0].job_id


def test_lossd_jobs_counts_the_jobs_of_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gauge was set only when a job changed state here: after a restart it read 0 for the jobs found,
    and jobs deleted (DeleteJob, retention) or cancelled while queued were counted in their old state."""
    monkeypatch.setattr(_manager, "RETENTION_SWEEP_S", 0.2)
    metrics = Metrics()  # receives the job hooks as a server's own metrics do
    data = str(tmp_path / "data")
    try:
        with start_in_process(data_dir=data, max_jobs=1) as address, grpc.insecure_channel(address) as channel:
            stub = training_pb2_grpc.TrainingServiceStub(channel)
            ended = [_run(stub, small_spec(epochs=1)) for _ in range(2)]
            assert [e.state for e in ended] == [pb.JOB_STATE_SUCCEEDED] * 2
            assert _settles(metrics, {"SUCCEEDED": 2}) == {"SUCCEEDED": 2}
            stub.DeleteJob(pb.DeleteJobRequest(job_id=ended[0].job_id), timeout=30)
            assert _gauge(metrics) == {"SUCCEEDED": 1}  # when DeleteJob answers

            busy = _submit(stub, LONG)  # holds the one slot
            assert _settles(metrics, {"SUCCEEDED": 1, "RUNNING": 1}) == {"SUCCEEDED": 1, "RUNNING": 1}
            queued = _submit(stub, small_spec())
            assert _gauge(metrics) == {"SUCCEEDED": 1, "RUNNING": 1, "QUEUED": 1}
            stub.CancelJob(pb.CancelJobRequest(job_id=queued), timeout=30)  # the store ends it: no worker
            assert _gauge(metrics) == {"SUCCEEDED": 1, "RUNNING": 1, "CANCELLED": 1}  # when CancelJob answers
            stub.CancelJob(pb.CancelJobRequest(job_id=busy), timeout=60)
            assert _settles(metrics, {"SUCCEEDED": 1, "CANCELLED": 2}) == {"SUCCEEDED": 1, "CANCELLED": 2}

        metrics.set_jobs({})  # as a new process's gauge reads before its server starts
        with start_in_process(data_dir=data):  # the jobs the store holds, counted as it starts
            assert _gauge(metrics) == {"SUCCEEDED": 1, "CANCELLED": 2}

        with start_in_process(data_dir=data, job_retention=0.001) as address, grpc.insecure_channel(address) as ch:
            # The first retention sweep deletes every ended job: none is left, and none is counted.
            assert _settles(metrics, {}) == {}
            assert not training_pb2_grpc.TrainingServiceStub(ch).ListJobs(pb.ListJobsRequest(), timeout=30).jobs
    finally:
        metrics.close()


def test_a_retention_sweep_that_fails_leaves_the_lease_thread_running(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep runs on the thread that renews leases and claims jobs: an error it did not expect (a full
    disk's sqlite3.OperationalError; PostgreSQL's read-only standby) ended that thread for good, and running
    jobs stalled at their lease's end."""
    import sqlite3
    import threading

    from lossd.server.training._store import SQLiteJobStore

    sweeps: list[float] = []

    def failing(self: Any, cutoff: float, limit: int = 1000) -> int:
        sweeps.append(cutoff)
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(SQLiteJobStore, "delete_ended_before", failing)
    with start_in_process(data_dir=str(tmp_path / "data"), job_retention=60.0) as address, \
            grpc.insecure_channel(address) as channel:
        deadline = time.monotonic() + 30
        while not sweeps and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sweeps, "no retention sweep ran"
        time.sleep(1.5)  # a tick or two after the failed sweep
        assert any(t.name == "lossd-job-leases" and t.is_alive() for t in threading.enumerate())
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        assert _run(stub, small_spec(epochs=1)).state == pb.JOB_STATE_SUCCEEDED


def _gone_already_is_fine(function: Any, path: str, info: Any) -> None:
    if not isinstance(info[1], FileNotFoundError):
        raise info[1]


def test_jobs_run_after_the_checkpoints_folder_was_removed(tmp_path: Path) -> None:
    """``<data-dir>/checkpoints`` removed while the server runs (a clean-up): every later job FAILED with
    "internal error in the training worker (FileNotFoundError)" until the server restarted."""
    data = tmp_path / "data"
    with start_in_process(data_dir=str(data)) as address, grpc.insecure_channel(address) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        assert _run(stub, small_spec(epochs=1)).state == pb.JOB_STATE_SUCCEEDED
        # the job's own checkpoint may be going at the same moment (its end removes it)
        shutil.rmtree(data / "checkpoints", onerror=_gone_already_is_fine)
        assert not (data / "checkpoints").exists()
        for _ in range(2):
            last = _run(stub, small_spec(epochs=1))
            assert (last.state, last.message) == (pb.JOB_STATE_SUCCEEDED, "finished 1 epochs (6 steps)")
        assert (data / "checkpoints").is_dir()
