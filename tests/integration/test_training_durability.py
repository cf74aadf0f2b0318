"""Durable jobs, against ``python -m lossd.server`` processes on one data directory: kill -9 mid-job,
restart, the job resumes from its checkpoint and ends with exactly the parameters of an uninterrupted
run; SIGTERM checkpoints and exits 0; WatchJob replays the history; two servers never share a data dir."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
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

#: Dropout, momentum, a schedule and L1/L2: everything a resume has to restore. About 2 s of training.
SPEC = small_spec(
    model={"mlp": {"hidden": [16, 8], "dropout": 0.1}},
    data={"builtin": {"name": "moons", "params": {"n_samples": 2000, "noise": 0.2}}, "validation_fraction": 0.2},
    loss={"name": "cross_entropy"},
    optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9},
    schedule={"cosine": {}},
    regularization={"l1": 0.0001, "l2": 0.001},
    epochs=10, batch_size=16, seed=11,
)


def _stub(address: str) -> tuple[grpc.Channel, training_pb2_grpc.TrainingServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, training_pb2_grpc.TrainingServiceStub(channel)


def _events(stub: training_pb2_grpc.TrainingServiceStub, job_id: str) -> list[pb.JobEvent]:
    return [r.event for r in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=180)]


def _reference(stub: training_pb2_grpc.TrainingServiceStub, spec: dict[str, Any]) -> pb.JobEvent:
    final = [r.event for r in stub.TrainJob(request(spec), timeout=180)][-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.message
    return final


def _worker_pid(served: ServedProcess, job_id: str) -> int:
    for line in list(served.log):
        m = re.search(rf"job {job_id} started in worker pid (\d+)", line)
        if m:
            return int(m.group(1))
    raise AssertionError(f"no worker pid for {job_id} in the log:\n{''.join(served.log)}")


def test_kill_9_mid_job_then_restart_resumes_with_identical_parameters(tmp_path: Path) -> None:
    """Also: a second server on the same data directory refuses to start."""
    data = tmp_path / "data"
    with ServedProcess.start(tmp_path, "--data-dir", str(data)) as served:
        channel, stub = _stub(served.address)
        before: list[pb.JobEvent] = []
        for reply in stub.TrainJob(request(SPEC), timeout=180):
            before.append(reply.event)
            if reply.event.kind == pb.JOB_EVENT_KIND_EPOCH and reply.event.epoch == 2:
                break  # the epoch-2 checkpoint is on disk before this event is sent
        job_id = before[0].job_id
        worker = _worker_pid(served, job_id)
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait(10)
        channel.close()
    assert wait_for(lambda: not alive(worker), 10, 0.05), "the worker outlived its server"
    assert (data / "checkpoints" / f"{job_id}.pt").is_file()

    with ServedProcess.start(tmp_path, "--data-dir", str(data)) as served:
        with pytest.raises(RuntimeError) as info:  # one server per data directory
            with ServedProcess.start(tmp_path, env={"LOSSD_DATA_DIR": str(data)}):
                pass
        assert "is in use by another lossd server" in str(info.value)
        assert f"pid {served.proc.pid}" in str(info.value)
        channel, stub = _stub(served.address)
        history = _events(stub, job_id)
        assert history[:len(before)] == before  # what was streamed before the kill, replayed as it was
        assert [e.seq for e in history] == list(range(1, len(history) + 1))
        states = [(e.state, e.message) for e in history if e.kind == pb.JOB_EVENT_KIND_STATE]
        assert [s for s, _ in states] == [pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING, pb.JOB_STATE_INTERRUPTED,
                                          pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED], (states, "".join(served.log))
        assert states[3][1].startswith("resumed from the checkpoint at step"), states[3][1]
        final = history[-1]
        assert [h.epoch for h in final.history] == list(range(1, 11))
        job = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job
        assert (job.state, job.resumes, job.last_seq) == (pb.JOB_STATE_SUCCEEDED, 1, final.seq)
        reference = _reference(stub, SPEC)
        assert final.parameters == reference.parameters  # every float, exactly
        assert list(final.history) == list(reference.history)
        channel.close()
    assert not (data / "checkpoints" / f"{job_id}.pt").exists()  # removed once the job ended
    with sqlite3.connect(data / "jobs.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_sigterm_checkpoints_running_jobs_and_the_next_start_resumes_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    spec = {**SPEC, "step_events_per_second": 1000}
    with ServedProcess.start(tmp_path, "--data-dir", str(data)) as served:
        channel, stub = _stub(served.address)
        call = stub.TrainJob(request(spec), timeout=180)
        streamed = []
        for reply in call:
            streamed.append(reply.event)
            if reply.event.kind == pb.JOB_EVENT_KIND_STEP and reply.event.step >= 150:
                break
        job_id = streamed[0].job_id
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(30) == 0
        with pytest.raises(grpc.RpcError) as info:  # the stream ends: the server went, not the job
            for reply in call:
                streamed.append(reply.event)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
        channel.close()
    interrupted = [e for e in streamed if e.state == pb.JOB_STATE_INTERRUPTED]
    assert interrupted and "checkpoint at step" in interrupted[0].message

    with ServedProcess.start(tmp_path, "--data-dir", str(data)) as served:
        channel, stub = _stub(served.address)
        history = _events(stub, job_id)
        resumed = [e for e in history if e.kind == pb.JOB_EVENT_KIND_STATE and e.message.startswith("resumed")]
        step = int(re.search(r"step (\d+)", interrupted[0].message).group(1))  # type: ignore[union-attr]
        assert len(resumed) == 1 and f"at step {step}:" in resumed[0].message, resumed
        assert history[-1].state == pb.JOB_STATE_SUCCEEDED
        assert history[-1].parameters == _reference(stub, spec).parameters
        channel.close()


def test_a_worker_killed_9_resumes_from_its_checkpoint_then_fails_saying_why(tmp_path: Path) -> None:
    """The OOM killer's SIGKILL: the job resumes from its checkpoint (--max-job-restarts, default 1) with the
    same final parameters as an uninterrupted run would reach; killed once more, it fails naming the signal
    and the limit."""
    long = {**SPEC, "epochs": 200}
    with ServedProcess.start(tmp_path, "--data-dir", str(tmp_path / "data"), "--max-jobs", "1") as served:
        channel, stub = _stub(served.address)
        events: list[pb.JobEvent] = []
        for reply in stub.TrainJob(request(long), timeout=180):
            events.append(reply.event)
            if reply.event.kind == pb.JOB_EVENT_KIND_EPOCH and reply.event.epoch == 2:
                break  # the epoch-2 checkpoint is on disk
        job_id = events[0].job_id
        first = _worker_pid(served, job_id)
        os.kill(first, signal.SIGKILL)

        def worker_pids() -> list[int]:
            return [int(m.group(1)) for line in list(served.log)
                    if (m := re.search(rf"job {job_id} started in worker pid (\d+)", line))]
        assert wait_for(lambda: len(worker_pids()) == 2, 60, 0.05), "".join(served.log[-20:])

        def resumed() -> bool:
            job = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job
            return job.state == pb.JOB_STATE_RUNNING and job.resumes == 1
        assert wait_for(resumed, 60, 0.05)
        os.kill(worker_pids()[1], signal.SIGKILL)
        history = _events(stub, job_id)
        states = [(e.state, e.message) for e in history if e.kind == pb.JOB_EVENT_KIND_STATE]
        assert [s for s, _ in states] == [pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING, pb.JOB_STATE_INTERRUPTED,
                                          pb.JOB_STATE_RUNNING, pb.JOB_STATE_FAILED], states
        assert "killed (signal 9" in states[2][1] and "restart 1 of at most 1 (--max-job-restarts)" in states[2][1]
        assert states[3][1].startswith("resumed from the checkpoint at step"), states[3][1]
        assert re.fullmatch(r"the worker process was killed by signal 9 \(SIGKILL\) \(out of memory\?\) after 1 "
                            r"restart\(s\) from its checkpoint; --max-job-restarts is 1", states[4][1]), states[4][1]
        channel.close()
