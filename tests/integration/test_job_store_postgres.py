"""Replicas sharing a PostgreSQL job store, against ``python -m lossd.server`` processes and a real PostgreSQL
server that the tests start (tests/support/postgres.py): failover after kill -9 with bit-identical parameters,
fencing of a replica paused past its lease, cancel through a replica that does not own the job, 200 jobs over
3 replicas each run once, a database restart mid-job, watchers on a replica that does not own the job.

Leases are 2 s here (``--job-lease-s 2``), so failovers take seconds.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from lossd.v1 import training_pb2_grpc
from lossd.v1 import training_pb2 as pb
from support.procstat import alive, wait_for
from support.servers import ServedProcess
from support.training import request, small_spec

pytestmark = pytest.mark.slow

LEASE_S = 2.0
#: Dropout, momentum, a schedule and L1/L2 (everything a resume restores); about 2 s of training.
SPEC = small_spec(
    model={"mlp": {"hidden": [16, 8], "dropout": 0.1}},
    data={"builtin": {"name": "moons", "params": {"n_samples": 2000, "noise": 0.2}}, "validation_fraction": 0.2},
    loss={"name": "cross_entropy"},
    optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9},
    schedule={"cosine": {}},
    regularization={"l1": 0.0001, "l2": 0.001},
    epochs=10, batch_size=16, seed=11,
)
#: A job of a few milliseconds.
TINY = small_spec(data={"builtin": {"name": "rings", "params": {"n_positive": 20, "n_negative": 20}},
                        "validation_fraction": 0.25}, epochs=1, batch_size=10)
TERMINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


@contextmanager
def replicas(tmp_path: Path, url: str, n: int, *args: str) -> Iterator[list[ServedProcess]]:
    """``n`` servers on one job store, each with its own data directory; started together."""
    with ExitStack() as stack, ThreadPoolExecutor(n) as pool:
        def start(i: int) -> ServedProcess:
            return stack.enter_context(ServedProcess.start(
                tmp_path, "--data-dir", str(tmp_path / f"replica-{i}"), "--job-lease-s", str(LEASE_S), *args,
                env={"LOSSD_JOB_STORE": url}))
        yield list(pool.map(start, range(n)))


def _stub(served: ServedProcess) -> training_pb2_grpc.TrainingServiceStub:
    return training_pb2_grpc.TrainingServiceStub(grpc.insecure_channel(served.address))


def _owner(servers: list[ServedProcess], job_id: str, after: int = 0) -> tuple[int, int]:
    """(index of the server whose log says it started ``job_id``'s worker, that worker's pid); the
    ``after``-th start counts from 0."""
    starts = []
    for i, served in enumerate(servers):
        for line in list(served.log):
            m = re.search(rf"job {job_id} started in worker pid (\d+)", line)
            if m:
                starts.append((i, int(m.group(1))))
    assert len(starts) > after, "".join(line for s in servers for line in s.log)
    return starts[after]


def _logs(servers: list[ServedProcess]) -> str:
    return "\n".join(f"--- replica {i}:\n" + "".join(s.log) for i, s in enumerate(servers))


def _starts(servers: list[ServedProcess], job_id: str) -> int:
    return sum(1 for s in servers for line in list(s.log) if f"job {job_id} started in worker pid" in line)


def _follow(stub: training_pb2_grpc.TrainingServiceStub, job_id: str, out: list[pb.JobEvent]) -> None:
    """Collect every event of ``job_id`` through WatchJob, re-attaching after the last seq on UNAVAILABLE."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            after = out[-1].seq if out else 0
            for reply in stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=after), timeout=180):
                out.append(reply.event)
                if reply.event.kind == pb.JOB_EVENT_KIND_STATE and reply.event.state in TERMINAL:
                    return
            if out and out[-1].state in TERMINAL:
                return
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            time.sleep(0.2)


def _submit(stub: training_pb2_grpc.TrainingServiceStub, spec: dict[str, Any]) -> str:
    """Submit ``spec`` (detached: the reply ends after the QUEUED event); returns the job id."""
    req = request(spec)
    req.detach = True
    return str([r.event for r in stub.TrainJob(req, timeout=60)][0].job_id)


def _reference(stub: training_pb2_grpc.TrainingServiceStub, spec: dict[str, Any]) -> pb.JobEvent:
    final = [r.event for r in stub.TrainJob(request(spec), timeout=180)][-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.message
    return final


def _check_one_run(events: list[pb.JobEvent]) -> None:
    """Gap-free seq from 1, one terminal event, last."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    terminal = [e for e in events if e.kind == pb.JOB_EVENT_KIND_STATE and e.state in TERMINAL]
    assert len(terminal) == 1 and terminal[0] is events[-1]


@pytest.fixture()
def db_url(postgres: Any) -> str:
    return str(postgres.fresh_database())


def test_kill_9_of_the_owner_another_replica_finishes_with_identical_parameters(tmp_path: Path, db_url: str) -> None:
    """And a watcher on the replica that does not own the job sees every event, in order, without a gap."""
    with replicas(tmp_path, db_url, 2) as servers:
        stubs = [_stub(s) for s in servers]
        job_id = _submit(stubs[0], SPEC)
        assert wait_for(lambda: _starts(servers, job_id) == 1, 120, 0.05), _logs(servers)
        owner, worker = _owner(servers, job_id)
        other = 1 - owner
        watched: list[pb.JobEvent] = []
        watcher = threading.Thread(target=_follow, args=(stubs[other], job_id, watched), daemon=True)
        watcher.start()
        # Mid-job: after the epoch-2 event (its checkpoint is in the store with it).
        assert wait_for(lambda: any(e.kind == pb.JOB_EVENT_KIND_EPOCH and e.epoch >= 2 for e in watched), 60, 0.05)
        servers[owner].proc.send_signal(signal.SIGKILL)
        servers[owner].proc.wait(10)
        assert wait_for(lambda: not alive(worker), 10, 0.05), "the worker outlived its server"
        watcher.join(120)
        assert not watcher.is_alive()
        _check_one_run(watched)
        states = [e.state for e in watched if e.kind == pb.JOB_EVENT_KIND_STATE]
        assert states == [pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING, pb.JOB_STATE_INTERRUPTED,
                          pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED], states
        assert _owner(servers, job_id, 1)[0] == other  # the survivor claimed it after the lease lapsed
        resumed = [e for e in watched if e.kind == pb.JOB_EVENT_KIND_STATE and e.state == pb.JOB_STATE_RUNNING][1]
        assert resumed.message.startswith("resumed from the checkpoint at step"), resumed.message
        final = watched[-1]
        assert [h.epoch for h in final.history] == list(range(1, 11))
        job = stubs[other].GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job
        assert (job.state, job.resumes, job.last_seq) == (pb.JOB_STATE_SUCCEEDED, 1, final.seq)
        reference = _reference(stubs[other], SPEC)
        assert final.parameters == reference.parameters  # every float, exactly
        assert list(final.history) == list(reference.history)
