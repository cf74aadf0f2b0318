"""Durable jobs, against ``python -m lossd.server`` processes on one data directory: kill -9 mid-job,
restart, the job resumes from its checkpoint and ends with exactly the parameters of an uninterrupted
run; SIGTERM checkpoints and exits 0; WatchJob replays the history; two servers never share a data dir."""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import signal
import sqlite3
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch

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
        owner = next(m.group(1) for line in list(served.log)
                     if (m := re.search(rf"job {job_id} \(JOB_STATE_QUEUED\) claimed by (\S+),", line)))
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
        # the server that ran it, by its name in the store (it read "(unknown)": the restart cleared the owner)
        assert states[2][1] == (f"the server running the job stopped ({owner}); it resumes from its last "
                                "checkpoint"), states[2][1]
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
        # where the job stood, as every event says (it said epoch 0/0, step 0/0: a progress bar went back to 0)
        states_events = [e for e in history if e.kind == pb.JOB_EVENT_KIND_STATE]
        for made in states_events[2::2]:  # INTERRUPTED, FAILED
            before = history[history.index(made) - 1]
            assert (made.epochs, made.total_steps) == (long["epochs"], history[0].total_steps), made
            assert (made.epoch, made.step, made.loss) == (before.epoch, before.step, before.loss), (made, before)
            assert made.step > 0 and made.loss > 0  # the store sets the job's loss with its step: not to 0
        job = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job
        assert job.loss == states_events[-1].loss > 0
        assert states[3][1].startswith("resumed from the checkpoint at step"), states[3][1]
        assert re.fullmatch(r"the worker process was killed by signal 9 \(SIGKILL\) \(out of memory\?\) after 1 "
                            r"restart\(s\) from its checkpoint; --max-job-restarts is 1", states[4][1]), states[4][1]
        channel.close()



def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (zombies included), by host pid."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(name))
            except (OSError, ValueError):
                continue
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_as_pid_1_the_server_reaps_the_workers_a_killed_forkserver_leaves(tmp_path: Path) -> None:
    """In a container without an init the server is PID 1, and every process whose parent dies is handed to
    it: a worker whose forkserver was killed (the OOM killer) dies with it and stayed a zombie for the
    container's life (a killed worker's ranks too), one PID slot each. The server reaps them (an audit,
    2026-12-05). Here PID 1 of a PID namespace of its own."""
    prefix = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")
    long = {**SPEC, "epochs": 200}
    with ServedProcess.start(tmp_path, "--data-dir", str(tmp_path / "data"), "--job-lease-s", "2",
                             prefix=prefix) as served:
        (server,) = _children(served.proc.pid)  # unshare's child: PID 1 inside
        channel, stub = _stub(served.address)
        for reply in stub.TrainJob(request(long), timeout=180):
            if reply.event.kind == pb.JOB_EVENT_KIND_STEP:
                break  # training: its worker runs
        (forkserver,) = [p for p in _children(server) if "forkserver" in _cmdline(p)]
        (worker,) = _children(forkserver)
        os.kill(forkserver, signal.SIGKILL)  # the worker dies with it (PR_SET_PDEATHSIG), handed to PID 1
        assert wait_for(lambda: not os.path.exists(f"/proc/{worker}"), 20, 0.1), (
            f"worker {worker} left as {open(f'/proc/{worker}/stat').read()!r}\n{served.report()}")
        channel.close()


# -- cancelling a job no worker trains: the parameters of its checkpoint (the 2026-12-05 audit) -------

#: Runs for minutes unless stopped: 30 steps an epoch.
ENDLESS = small_spec(epochs=10_000, batch_size=10, metrics=[], step_events_per_second=50)


def _checkpoint(data: Path, job_id: str) -> dict[str, Any]:
    state = torch.load(data / "checkpoints" / f"{job_id}.pt", map_location="cpu", weights_only=True)
    assert state["global_step"] > 0
    return state


def _ends_at_checkpoint(final: pb.JobEvent, state: dict[str, Any]) -> None:
    """``final`` carries what the checkpoint ``state`` holds: its step, history and parameters, exactly."""
    assert final.state == pb.JOB_STATE_CANCELLED, final.message
    assert final.step == state["global_step"] and len(final.history) == len(state["history"]), final.message
    assert sorted(final.parameters) == sorted(state["model"])
    for name, t in state["model"].items():
        sent = np.asarray(final.parameters[name].values, dtype=np.float32).reshape(tuple(final.parameters[name].shape))
        assert np.array_equal(sent, t.numpy()), name


def _stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (SIGSTOP takes effect as each is next scheduled)."""
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    return bool(tasks) and all((t / "stat").read_text().rsplit(")", 1)[1].split()[0] in "Tt" for t in tasks)


def _cancel(stub: training_pb2_grpc.TrainingServiceStub, job_id: str) -> None:
    assert stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=60).job.state == pb.JOB_STATE_CANCELLED


def _final(stub: training_pb2_grpc.TrainingServiceStub, job_id: str) -> pb.JobEvent:
    """The job's terminal event, as WatchJob and GetJob give it."""
    final = _events(stub, job_id)[-1]
    assert final.kind == pb.JOB_EVENT_KIND_STATE and final.state == pb.JOB_STATE_CANCELLED
    got = stub.GetJob(pb.GetJobRequest(job_id=job_id, include_parameters=True), timeout=10)
    assert got.job.step == final.step and got.parameters == final.parameters
    return final


def test_cancelling_an_interrupted_job_ends_it_with_the_parameters_of_its_checkpoint(tmp_path: Path) -> None:
    """Two jobs interrupted by a SIGTERM; the next server (one slot) resumes the older, the other waits. A
    cancel of the waiting job, and one of the resuming job (its worker most likely still starting or planning,
    which stops it at once; or the run, if it got there first, before its first step), end CANCELLED with
    the parameters, step and history of their checkpoints: not step 0 without parameters, 'before it ran'."""
    data = tmp_path / "data"
    with ServedProcess.start(tmp_path, "--data-dir", str(data), "--max-jobs", "2") as served:
        channel, stub = _stub(served.address)
        older, newer = (next(iter(stub.TrainJob(request({**ENDLESS, "detach": True}), timeout=60))).event.job_id
                        for _ in range(2))
        for job_id in (older, newer):  # an epoch and a bit: a checkpoint at SIGTERM, mid-epoch
            for reply in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=120):
                if reply.event.step > 35:
                    break
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(30) == 0
        channel.close()
    saved = {job_id: _checkpoint(data, job_id) for job_id in (older, newer)}

    with ServedProcess.start(tmp_path, "--data-dir", str(data), "--max-jobs", "1") as served:
        channel, stub = _stub(served.address)
        _cancel(stub, newer)  # the slot is the older job's (claimed as the server started): this one waits
        _cancel(stub, older)  # its worker starts (the forkserver takes seconds to start) or plans
        waiting = _final(stub, newer)
        _ends_at_checkpoint(waiting, saved[newer])
        step, epoch = saved[newer]["global_step"], saved[newer]["epoch"] + 1
        assert waiting.message == (f"cancelled before it resumed, after step {step} (epoch {epoch}): the parameters "
                                   "of its checkpoint"), waiting.message
        assert not (data / "checkpoints" / f"{newer}.pt").exists()
        resuming = _final(stub, older)
        _ends_at_checkpoint(resuming, saved[older])
        step, epoch = saved[older]["global_step"], saved[older]["epoch"] + 1
        assert resuming.message in (
            f"cancelled before it resumed, after step {step} (epoch {epoch}): the parameters of its checkpoint",
            f"cancelled after step {step} (epoch {epoch})"), resuming.message  # the worker, or the run, stopped
        assert "before it ran" not in resuming.message
        channel.close()


def test_a_cancel_that_has_to_stop_the_worker_ends_with_the_parameters_of_its_last_checkpoint(
        tmp_path: Path) -> None:
    """A worker that does not act on the cancel (stopped here with SIGSTOP) is killed: the job ends CANCELLED
    with the parameters of its last checkpoint (an epoch's end), saying so."""
    data = tmp_path / "data"
    with ServedProcess.start(tmp_path, "--data-dir", str(data)) as served:
        channel, stub = _stub(served.address)
        job_id = next(iter(stub.TrainJob(request({**ENDLESS, "detach": True}), timeout=60))).event.job_id
        for reply in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=120):
            if reply.event.step > 35:  # epoch 1's checkpoint is written, and five steps more taken
                break
        worker = _worker_pid(served, job_id)
        os.kill(worker, signal.SIGSTOP)
        assert wait_for(lambda: _stopped(worker), 10, 0.01)  # every thread: no checkpoint is written from here
        saved = _checkpoint(data, job_id)  # an epoch's end (30 steps each); the worker went on from there
        step, epoch = saved["global_step"], saved["epoch"] + 1
        assert step % 30 == 0 and not saved["step_in_epoch"], step
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            cancelling = pool.submit(_cancel, stub, job_id)  # answers once the job has ended
            assert wait_for(lambda: any(f"job {job_id}: cancel requested" in line for line in list(served.log)), 30,
                            0.02)
            os.kill(worker, signal.SIGKILL)  # what the server does itself after 10 s
            cancelling.result(60)
        final = _final(stub, job_id)
        _ends_at_checkpoint(final, saved)
        assert final.message == ("cancelled (the worker was stopped): the parameters of its last checkpoint, after "
                                 f"step {step} (epoch {epoch})"), final.message
        channel.close()


def test_epochs_a_worker_saved_while_its_server_was_gone_get_their_events(tmp_path: Path) -> None:
    """A worker saves an epoch's checkpoint before it sends the epoch's event: a server killed between the two
    lost the event, and the resumed run went on from the next epoch, so those epochs had no EPOCH event
    (docs/training.md: every epoch has one). Here the server is stopped (SIGSTOP) while its worker trains on
    for two more epochs within its lease, then killed: the next server stores those epochs' events from the
    checkpoint before the job resumes."""
    data = tmp_path / "data"
    with ServedProcess.start(tmp_path, "--data-dir", str(data)) as served:
        channel, stub = _stub(served.address)
        for reply in stub.TrainJob(request(SPEC), timeout=180):
            if reply.event.kind == pb.JOB_EVENT_KIND_EPOCH and reply.event.epoch == 2:
                job_id = reply.event.job_id
                break
        channel.close()
        served.proc.send_signal(signal.SIGSTOP)
        try:
            assert wait_for(lambda: _checkpoint(data, job_id)["epoch"] >= 4, 60, 0.02), "the worker did not train on"
        finally:
            served.proc.send_signal(signal.SIGKILL)
            served.proc.wait(10)
    saved = _checkpoint(data, job_id)["epoch"]

    with ServedProcess.start(tmp_path, "--data-dir", str(data)) as served:
        channel, stub = _stub(served.address)
        history = _events(stub, job_id)
        channel.close()
    final = history[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.message
    epochs = [e for e in history if e.kind == pb.JOB_EVENT_KIND_EPOCH]
    assert [e.epoch for e in epochs] == list(range(1, 11)), [(e.epoch, e.message) for e in epochs]
    replayed = [e for e in epochs if e.message.startswith("replayed from the job's checkpoint")]
    assert [e.epoch for e in replayed] == list(range(3, saved + 1))
    for e in replayed:  # what the epoch's history row says, and its last step
        row = final.history[e.epoch - 1]
        assert (e.loss, dict(e.metrics), e.lr, dict(e.loss_parts)) == (row.loss, dict(row.metrics), row.lr,
                                                                       dict(row.loss_parts))
        assert e.step == e.epoch * final.total_steps // 10
    states = [e.state for e in history if e.kind == pb.JOB_EVENT_KIND_STATE]
    assert states == [pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING, pb.JOB_STATE_INTERRUPTED, pb.JOB_STATE_RUNNING,
                      pb.JOB_STATE_SUCCEEDED]
    steps = [e.step for e in history]
    assert steps == sorted(steps), steps  # the INTERRUPTED event stands at the last replayed epoch, not behind it


def test_a_job_stopped_before_it_started_training_stays_queued(tmp_path: Path) -> None:
    """A SIGTERM while a job's worker was still planning it (a slot freed just before the drain) recorded
    QUEUED -> INTERRUPTED, "resumes from its last checkpoint", for a job that never ran and has none (the job
    audit, 2026-12-06: 5 of 8 tries). It is given back as it was: QUEUED, its one event, resumed by the next start."""
    data = tmp_path / "data"
    slow = small_spec(data={"builtin": {"name": "blobs", "params": {"n_samples": 1_000_000, "n_features": 40}}},
                      loss={"name": "cross_entropy"}, model={"linear": {}}, epochs=1, metrics=[])  # ~1 s to plan
    with ServedProcess.start(tmp_path, "--data-dir", str(data)) as served:
        channel, stub = _stub(served.address)
        req = request(slow)
        req.detach = True
        (queued,) = [r.event for r in stub.TrainJob(req, timeout=60)]
        assert wait_for(lambda: any(f"job {queued.job_id} started in worker pid" in line for line in served.log), 60)
        served.proc.send_signal(signal.SIGTERM)  # the worker plans its data for a second yet: no RUNNING
        assert served.proc.wait(60) == 0
        channel.close()
    with sqlite3.connect(data / "jobs.sqlite3") as db:
        (state,) = db.execute("SELECT state FROM jobs WHERE job_id = ?", (queued.job_id,)).fetchone()
        events = [pb.JobEvent.FromString(d) for (d,) in db.execute(
            "SELECT data FROM events WHERE job_id = ? ORDER BY seq", (queued.job_id,))]
    if pb.JOB_STATE_RUNNING in [e.state for e in events]:  # planning the data takes about 1 s: rare
        pytest.skip("the worker started training before the stop reached it: the timing this test needs was missed")
    assert state == pb.JOB_STATE_QUEUED and [e.state for e in events] == [pb.JOB_STATE_QUEUED], events


def test_a_job_whose_checkpoint_went_missing_starts_over_saying_so(tmp_path: Path) -> None:
    """An interrupted job whose checkpoint was removed from the data directory before the restart starts over
    from step 0, and its RUNNING event says why (it said "started", as a job that had never trained), with the
    result of an uninterrupted run: the run is deterministic."""
    data = tmp_path / "data"
    with ServedProcess.start(tmp_path, "--data-dir", str(data)) as served:
        channel, stub = _stub(served.address)
        streamed = []
        for reply in stub.TrainJob(request(SPEC), timeout=180):
            streamed.append(reply.event)
            if reply.event.kind == pb.JOB_EVENT_KIND_EPOCH and reply.event.epoch == 2:
                break
        job_id = streamed[0].job_id
        served.proc.send_signal(signal.SIGTERM)  # checkpoints at the next step, ends the job INTERRUPTED
        assert served.proc.wait(30) == 0
        channel.close()
    (data / "checkpoints" / f"{job_id}.pt").unlink()

    with ServedProcess.start(tmp_path, "--data-dir", str(data)) as served:
        channel, stub = _stub(served.address)
        history = _events(stub, job_id)
        states = [e for e in history if e.kind == pb.JOB_EVENT_KIND_STATE]
        assert [e.state for e in states] == [pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING, pb.JOB_STATE_INTERRUPTED,
                                             pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED], states
        reached = states[2].step  # where the SIGTERM's checkpoint was
        assert reached > 0 and "checkpoint at step" in states[2].message, states[2]
        assert states[3].step == 0 and states[3].message == (
            f"started over: the job had reached step {reached}, but it has no checkpoint to resume from "
            f"(checkpoints/{job_id}.pt is missing)"), states[3].message
        assert history[-1].parameters == _reference(stub, SPEC).parameters  # the same result, every float
        channel.close()

