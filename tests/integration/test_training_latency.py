"""Training runs outside the serving path: with the maximum number of jobs running and streaming
progress, health checks and small EvaluateLoss calls keep p99 < 100 ms (bounded: a few seconds)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lossd.v1 import lossd_pb2, lossd_pb2_grpc, training_pb2_grpc
from lossd.v1 import training_pb2 as pb
from support.servers import ServedProcess
from support.training import request, small_spec

pytestmark = pytest.mark.slow

MAX_JOBS = 2
CALLS = 250
#: Long jobs that stream step events at up to 50 per second each.
BUSY = small_spec(data={"builtin": {"name": "rings"}}, epochs=1000, batch_size=64, step_events_per_second=50)


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def test_health_and_evaluate_stay_fast_while_jobs_run(tmp_path: Path) -> None:
    with ServedProcess.start(tmp_path, "--max-jobs", str(MAX_JOBS), "--data-dir", str(tmp_path / "data")) as served, \
            grpc.insecure_channel(served.address) as channel:
        training = training_pb2_grpc.TrainingServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        losses = lossd_pb2_grpc.LossServiceStub(channel)
        evaluate = lossd_pb2.EvaluateLossRequest(loss="mse", inputs={
            "input": lossd_pb2.Tensor(dtype="float32", shape=[4], values=[1, 2, 3, 4]),
            "target": lossd_pb2.Tensor(dtype="float32", shape=[4], values=[0, 0, 0, 0])})
        for _ in range(20):  # warm the channel and the server's first calls
            health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            losses.EvaluateLoss(evaluate, timeout=10)

        calls = [training.TrainJob(request(BUSY), timeout=300) for _ in range(MAX_JOBS)]
        progress = [0] * MAX_JOBS
        running = threading.Barrier(MAX_JOBS + 1)

        def consume(k: int) -> None:
            signalled = False
            try:
                for reply in calls[k]:
                    if reply.event.kind == pb.JOB_EVENT_KIND_STEP:
                        progress[k] += 1
                        if not signalled:
                            signalled = True
                            running.wait(120)
            except grpc.RpcError:
                pass  # cancelled at the end of the test

        threads = [threading.Thread(target=consume, args=(k,), daemon=True) for k in range(MAX_JOBS)]
        for t in threads:
            t.start()
        running.wait(120)  # every job is training and streaming
        job_ids = [j.job_id for j in training.ListJobs(pb.ListJobsRequest(states=[pb.JOB_STATE_RUNNING]),
                                                        timeout=10).jobs]
        assert len(job_ids) == MAX_JOBS
        try:
            health_ms, evaluate_ms = [], []
            steps_before = list(progress)
            for _ in range(CALLS):
                t0 = time.perf_counter()
                assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1
                t1 = time.perf_counter()
                assert losses.EvaluateLoss(evaluate, timeout=10).value == 7.5
                t2 = time.perf_counter()
                health_ms.append((t1 - t0) * 1e3)
                evaluate_ms.append((t2 - t1) * 1e3)
            assert all(after > before for after, before in zip(progress, steps_before)), "jobs stopped streaming"
            assert len(training.ListJobs(pb.ListJobsRequest(states=[pb.JOB_STATE_RUNNING]), timeout=10).jobs) == 2
        finally:
            for job_id in job_ids:
                training.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=30)
            for t in threads:
                t.join(30)
        report = (f"health p50 {sorted(health_ms)[CALLS // 2]:.1f} ms, p99 {_p99(health_ms):.1f} ms; "
                  f"EvaluateLoss p50 {sorted(evaluate_ms)[CALLS // 2]:.1f} ms, p99 {_p99(evaluate_ms):.1f} ms")
        print(report)
        assert _p99(health_ms) < 100 and _p99(evaluate_ms) < 100, report
