"""A full data directory (a 32 MiB tmpfs mounted as the server's --data-dir, filled up while a job
runs): the running job ends INTERRUPTED (held in memory), TrainJob answers RESOURCE_EXHAUSTED "data
directory full", TrainingService's health turns NOT_SERVING while LossService serves; once space is
freed everything recovers without a restart: the held events are written, health is SERVING again,
the job resumes from its checkpoint and new jobs are accepted. Needs root (mount); skipped otherwise."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lossd.v1 import lossd_pb2, lossd_pb2_grpc, training_pb2_grpc
from lossd.v1 import training_pb2 as pb
from support.procstat import wait_for
from support.servers import ServedProcess
from support.training import request, small_spec

pytestmark = pytest.mark.slow

#: A job of a few thousand steps per epoch: it runs for a while, checkpointing at each epoch end.
LONG = small_spec(data={"builtin": {"name": "rings"}}, epochs=200, batch_size=8, step_events_per_second=20)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str = "32m") -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs for the data directory (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(directory: Path) -> Path:
    """Write a file until the file system is full; returns it."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 4096):  # then the last partial chunks
            with contextlib.suppress(OSError):
                while True:
                    f.write(bytes(size))
    return filler


def _health(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status)


def _evaluate_ok(channel: grpc.Channel) -> bool:
    stub = lossd_pb2_grpc.LossServiceStub(channel)
    r = stub.EvaluateLoss(lossd_pb2.EvaluateLossRequest(loss="mse", inputs={
        "input": lossd_pb2.Tensor(dtype="float32", shape=[2], values=[0.5, 2.0]),
        "target": lossd_pb2.Tensor(dtype="float32", shape=[2], values=[1.0, 1.0])}), timeout=30)
    return r.value == 0.625


def test_a_full_data_directory_stops_training_cleanly_and_recovers(tmp_path: Path) -> None:
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    with _tmpfs(tmp_path / "data") as data, \
            ServedProcess.start(tmp_path, "--data-dir", str(data), "--plugins", "none", "--max-jobs", "1") as served, \
            grpc.insecure_channel(served.address) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        events: list[pb.JobEvent] = []
        stream = stub.TrainJob(request(LONG), timeout=300)

        def follow() -> None:
            with contextlib.suppress(grpc.RpcError):
                for reply in stream:
                    events.append(reply.event)

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        assert wait_for(lambda: any(e.kind == pb.JOB_EVENT_KIND_EPOCH for e in events), 120, 0.05), events
        job_id = events[0].job_id
        assert _health(channel, "lossd.v1.TrainingService") == serving

        filler = _fill(data)
        try:
            def interrupted() -> bool:
                return any(e.kind == pb.JOB_EVENT_KIND_STATE and e.state == pb.JOB_STATE_INTERRUPTED for e in events)
            assert wait_for(interrupted, 60, 0.1), ([(e.seq, e.kind, e.state, e.message) for e in events[-5:]],
                                                    "".join(served.log[-40:]))
            last = [e for e in events if e.state == pb.JOB_STATE_INTERRUPTED][-1]
            assert "data directory full" in last.message, last.message
            assert wait_for(lambda: _health(channel, "lossd.v1.TrainingService") == not_serving, 10, 0.1)
            assert _health(channel, "lossd.v1.LossService") == serving
            assert _evaluate_ok(channel)  # LossService serves
            with pytest.raises(grpc.RpcError) as info:
                for _ in stub.TrainJob(request(small_spec()), timeout=60):
                    pass
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value
            assert "data directory full" in (info.value.details() or ""), info.value.details()
            job = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job
            assert job.state == pb.JOB_STATE_INTERRUPTED, job  # as held in memory
            assert served.proc.poll() is None
        finally:
            os.unlink(filler)

        # Space again: no restart needed.
        assert wait_for(lambda: _health(channel, "lossd.v1.TrainingService") == serving, 30, 0.1)
        resumed = [e for e in events if e.kind == pb.JOB_EVENT_KIND_STATE][-1]
        assert wait_for(lambda: [e.state for e in events if e.kind == pb.JOB_EVENT_KIND_STATE][-1]
                        == pb.JOB_STATE_RUNNING, 60, 0.1), resumed
        assert [e.seq for e in events] == list(range(1, len(events) + 1))  # one numbering, held events included
        job = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job
        assert job.state == pb.JOB_STATE_RUNNING and job.resumes >= 1, job  # the held events were written
        cancelled = stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=60).job
        assert cancelled.state == pb.JOB_STATE_CANCELLED
        reader.join(30)
        replay = [r.event for r in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=60)]
        assert [e.seq for e in replay] == [e.seq for e in events]  # stored as streamed
        detached = next(iter(stub.TrainJob(request({**small_spec(), "detach": True}), timeout=60)))
        assert detached.event.state == pb.JOB_STATE_QUEUED  # new jobs are accepted again
