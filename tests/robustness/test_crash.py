"""kill -9 of ``python -m lossd.server`` at random moments while training jobs run, restarting it
on the same data directory each time. Afterwards every acknowledged job (one whose id the client
got back) exists, none is stuck RUNNING, each ends SUCCEEDED with exactly the parameters of an
uninterrupted run of its spec, and SQLite's ``PRAGMA integrity_check`` says ok.

The default suite kills 2 times (about 15 s); ``make soak`` (``LOSSD_SOAK=1``) 20 times. The moments come
from a seeded generator (``LOSSD_CRASH_SEED``, default 7): a failure can be replayed.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import grpc
import pytest

from lossd.v1 import training_pb2 as pb
from lossd.v1 import training_pb2_grpc
from support.procstat import alive, children, wait_for
from support.servers import ServedProcess
from support.training import request, small_spec

pytestmark = pytest.mark.slow

SOAK = os.environ.get("LOSSD_SOAK", "") not in ("", "0")
KILLS = 20 if SOAK else 2
SEED = int(os.environ.get("LOSSD_CRASH_SEED", "7"))
#: New jobs are submitted in the first rounds only, so that the rest kill jobs mid-way.
SUBMITTING_ROUNDS = 10 if SOAK else 2


def _spec(seed: int) -> dict[str, object]:
    """About 0.5 s of training with everything a resume must restore: dropout, momentum, a cosine
    schedule, L1/L2."""
    return small_spec(
        model={"mlp": {"hidden": [16, 8], "dropout": 0.1}},
        data={"builtin": {"name": "moons", "params": {"n_samples": 800, "noise": 0.2}},
              "validation_fraction": 0.2},
        loss={"name": "cross_entropy"},
        optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9},
        schedule={"cosine": {}},
        regularization={"l1": 0.0001, "l2": 0.001},
        epochs=6, batch_size=16, seed=seed,
    )


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _submit(address: str, seed: int) -> str | None:
    """TrainJob(detach) of the spec with ``seed``; its id once the server acknowledged it."""
    with grpc.insecure_channel(address) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        try:
            replies = list(stub.TrainJob(request({**_spec(seed), "detach": True}), timeout=30))
        except grpc.RpcError:
            return None  # killed before it answered: not acknowledged
    return replies[0].event.job_id if replies else None


def test_kill_9_at_random_moments_loses_no_acknowledged_job(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data = tmp_path / "data"
    acknowledged: dict[str, int] = {}  # job id -> the seed of its spec
    moments = []
    for round_ in range(KILLS):
        with ServedProcess.start(tmp_path, "--data-dir", str(data), "--max-jobs", "1") as served:
            started = time.monotonic()
            moment = rng.uniform(0.0, 2.5)
            moments.append(round(moment, 2))
            if round_ < SUBMITTING_ROUNDS:
                seed = rng.choice([11, 12, 13])
                job_id = _submit(served.address, seed)
                if job_id is not None:
                    acknowledged[job_id] = seed
            time.sleep(max(0.0, started + moment - time.monotonic()))
            family = _descendants(served.proc.pid)  # the forkserver and the job's worker, if any
            served.proc.send_signal(signal.SIGKILL)
            served.proc.wait(10)
        # Nothing the server started outlives it (a worker left behind could write to the next one's files).
        assert wait_for(lambda gone=family: not any(alive(p) for p in gone), 15), f"left behind: {family}"
    assert acknowledged, "no job was acknowledged"

    with ServedProcess.start(tmp_path, "--data-dir", str(data), "--max-jobs", "1") as served:
        with grpc.insecure_channel(served.address) as channel:
            stub = training_pb2_grpc.TrainingServiceStub(channel)
            stored = {j.job_id for j in stub.ListJobs(pb.ListJobsRequest(limit=1000), timeout=30).jobs}
            assert set(acknowledged) <= stored, (sorted(acknowledged), sorted(stored))
            finals = {}
            for job_id in sorted(stored):  # every job ends (WatchJob replays, then follows), none stays RUNNING
                events = [r.event for r in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=300)]
                finals[job_id] = events[-1]
            jobs = stub.ListJobs(pb.ListJobsRequest(limit=1000), timeout=30).jobs
            references = {}
            for seed in sorted(set(acknowledged.values())):  # uninterrupted runs of the same specs
                final = [r.event for r in stub.TrainJob(request(_spec(seed)), timeout=300)][-1]
                assert final.state == pb.JOB_STATE_SUCCEEDED, final.message
                references[seed] = final
    report = f"kills at {moments} s after each start (seed {SEED}); log:\n{''.join(served.log[-30:])}"
    states = {j.job_id: j.state for j in jobs}
    assert set(acknowledged) <= set(states), report
    for job_id, seed in acknowledged.items():
        final = finals[job_id]
        assert final.state == pb.JOB_STATE_SUCCEEDED, (job_id, final.message, report)
        assert final.parameters == references[seed].parameters, (job_id, "parameters differ", report)
        assert list(final.history) == list(references[seed].history), (job_id, report)
    assert pb.JOB_STATE_RUNNING not in states.values(), states
    with sqlite3.connect(data / "jobs.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
