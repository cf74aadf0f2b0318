"""lossd.v1.TrainingService over real gRPC: TrainJob streams, WatchJob replay, GetJob, ListJobs,
CancelJob, the queue and its limit, disconnects, encodings, errors, health and reflection."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lossd.client import encode
from lossd.v1 import lossd_pb2, training_pb2_grpc
from lossd.v1 import training_pb2 as pb
from support.servers import start_in_process
from support.training import request, small_spec

TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
#: A job that runs for minutes unless cancelled.
LONG = small_spec(data={"builtin": {"name": "rings"}}, epochs=500, batch_size=100, metrics=[])
#: About a second or two of training.
MEDIUM = small_spec(data={"builtin": {"name": "rings"}, "validation_fraction": 0.2}, epochs=12, batch_size=100)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with start_in_process(max_jobs=2, max_queued_jobs=2) as addr:
        yield addr


@pytest.fixture(scope="module")
def channel(address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(address) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> training_pb2_grpc.TrainingServiceStub:
    return training_pb2_grpc.TrainingServiceStub(channel)


def run(stub: training_pb2_grpc.TrainingServiceStub, spec: dict[str, Any], **fields: Any) -> list[pb.JobEvent]:
    req = request(spec)
    for k, v in fields.items():
        setattr(req, k, v)
    return [r.event for r in stub.TrainJob(req, timeout=120)]


def submit(stub: training_pb2_grpc.TrainingServiceStub, spec: dict[str, Any]) -> str:
    (event,) = run(stub, spec, detach=True)
    assert event.seq == 1 and event.state == pb.JOB_STATE_QUEUED
    return event.job_id


def watch(stub: training_pb2_grpc.TrainingServiceStub, job_id: str, after_seq: int = 0,
          **fields: Any) -> list[pb.JobEvent]:
    return [r.event for r in stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=after_seq, **fields),
                                           timeout=120)]


def wait_running(stub: training_pb2_grpc.TrainingServiceStub, job_id: str, timeout: float = 60) -> None:
    for r in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=timeout):
        if r.event.kind in (pb.JOB_EVENT_KIND_STEP, pb.JOB_EVENT_KIND_EPOCH):
            return
    raise AssertionError(f"job {job_id} ended before it made progress")


def test_reflection_and_health_know_the_training_service(channel: grpc.Channel, address: str) -> None:
    from support.tools import run_tool, tool_path
    listed = run_tool([tool_path("grpcurl", "make test installs it"), "-plaintext", address, "list"]).stdout.split()
    assert "lossd.v1.TrainingService" in listed
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="lossd.v1.TrainingService"), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_train_job_streams_from_queued_to_succeeded(stub: training_pb2_grpc.TrainingServiceStub) -> None:
    events = run(stub, small_spec(step_events_per_second=1000, name="smoke"))
    job_id = events[0].job_id
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(e.job_id == job_id for e in events)
    assert [e.state for e in events[:2]] == [pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING]
    assert "queued: 12 steps (2 epochs of 300 samples, batch 50)" in events[0].message
    final = events[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED and final.kind == pb.JOB_EVENT_KIND_STATE
    assert sum(e.kind == pb.JOB_EVENT_KIND_EPOCH for e in events) == 2
    assert final.step == final.total_steps == 12 and final.epoch == final.epochs == 2
    assert {"train_accuracy", "val_accuracy", "val_loss"} == set(final.metrics)
    assert [h.epoch for h in final.history] == [1, 2]
    # builtin data: the parameters come as numbers, like EvaluateLoss answers a `values` request
    w = final.parameters["fc1.weight"]
    assert (w.dtype, list(w.shape), len(w.values), w.raw) == ("float32", [8, 2], 16, b"")

    got = stub.GetJob(pb.GetJobRequest(job_id=job_id, include_parameters=True), timeout=10)
    assert got.job.state == pb.JOB_STATE_SUCCEEDED and got.job.name == "smoke"
    assert got.job.last_seq == final.seq and got.job.step == 12 and got.job.epochs == 2
    assert dict(got.job.metrics) == dict(final.metrics)
    assert got.job.spec == request(small_spec(step_events_per_second=1000, name="smoke"))
    assert got.parameters["fc1.weight"] == w
    raw = stub.GetJob(pb.GetJobRequest(job_id=job_id, include_parameters=True,
                                       output_encoding=lossd_pb2.TENSOR_ENCODING_RAW), timeout=10)
    assert np.frombuffer(raw.parameters["fc1.weight"].raw, "<f4").tolist() == list(w.values)


def test_watch_job_replays_exactly_what_the_stream_sent(stub: training_pb2_grpc.TrainingServiceStub) -> None:
    events = run(stub, small_spec(step_events_per_second=1000))
    job_id = events[0].job_id
    assert watch(stub, job_id) == events
    assert watch(stub, job_id, after_seq=3) == events[3:]
    assert watch(stub, job_id, after_seq=events[-1].seq) == []  # nothing after the end: the stream just ends
    # past the last event: it ended OK with no event, which a client could not tell from a success (the job audit,
    # 2026-12-06); a running job's too (it ended OK once the job ended)
    with pytest.raises(grpc.RpcError) as past:
        watch(stub, job_id, after_seq=events[-1].seq + 1)
    assert past.value.code() == grpc.StatusCode.INVALID_ARGUMENT and past.value.details().startswith(
        f"after_seq: is {events[-1].seq + 1}; job {job_id}'s events end at {events[-1].seq}"), past.value.details()
    raw = watch(stub, job_id, after_seq=events[-1].seq - 1, output_encoding=lossd_pb2.TENSOR_ENCODING_RAW)
    assert raw[0].parameters["out.bias"].raw and not raw[0].parameters["out.bias"].values


def test_a_client_that_disconnects_does_not_stop_its_job(stub: training_pb2_grpc.TrainingServiceStub) -> None:
    call = stub.TrainJob(request(MEDIUM), timeout=120)
    seen = []
    for reply in call:
        seen.append(reply.event)
        if reply.event.kind == pb.JOB_EVENT_KIND_EPOCH:
            break
    call.cancel()
    job_id = seen[0].job_id
    assert stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job.state == pb.JOB_STATE_RUNNING
    rest = watch(stub, job_id, after_seq=seen[-1].seq)
    assert rest[0].seq == seen[-1].seq + 1
    assert rest[-1].state == pb.JOB_STATE_SUCCEEDED and len(rest[-1].history) == 12


def test_detach_returns_at_once_and_the_job_runs(stub: training_pb2_grpc.TrainingServiceStub) -> None:
    job_id = submit(stub, small_spec())
    assert watch(stub, job_id)[-1].state == pb.JOB_STATE_SUCCEEDED


def test_cancel_a_running_job(stub: training_pb2_grpc.TrainingServiceStub) -> None:
    job_id = submit(stub, LONG)
    wait_running(stub, job_id)
    start = time.monotonic()
    reply = stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=30)
    took = time.monotonic() - start
    assert reply.job.state == pb.JOB_STATE_CANCELLED and took < 5, (reply, took)
    events = watch(stub, job_id)
    final = events[-1]
    assert final.state == pb.JOB_STATE_CANCELLED and "cancelled after step" in final.message
    assert 0 < final.step < final.total_steps and final.parameters  # the parameters so far
    # a retry (after a lost reply, a deadline) answers as the first call did: it was FAILED_PRECONDITION
    assert stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=10).job == reply.job


def test_cancel_job_is_idempotent_for_concurrent_calls_and_retries(
        address: str, stub: training_pb2_grpc.TrainingServiceStub) -> None:
    """Concurrent CancelJob calls of one job all answer OK with the job CANCELLED, as a retry does; one call
    read the job after another had cancelled it and was refused FAILED_PRECONDITION "already ended CANCELLED".
    A job that ended otherwise is still refused."""
    import asyncio

    done = run(stub, small_spec())[-1]
    running = [submit(stub, LONG) for _ in range(2)]  # both slots: the jobs below stay queued
    queued = [submit(stub, LONG) for _ in range(2)]

    async def cancel_each(job_ids: list[str], calls: int) -> list[list[pb.Job]]:
        async with grpc.aio.insecure_channel(address) as channel:
            jobs = training_pb2_grpc.TrainingServiceStub(channel)
            answers = []
            for job_id in job_ids:
                replies = await asyncio.gather(*(jobs.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=30)
                                                 for _ in range(calls)))
                answers.append([r.job for r in replies])
            return answers

    try:
        for job_id in running:
            wait_running(stub, job_id)
        for job_id, answers in zip(queued + running, asyncio.run(cancel_each(queued + running, 3)), strict=True):
            assert {a.state for a in answers} == {pb.JOB_STATE_CANCELLED}, (job_id, answers)
            assert all(a.last_seq == answers[0].last_seq for a in answers), answers  # one cancel, one event
            again = stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=10).job
            assert again.state == pb.JOB_STATE_CANCELLED and again.last_seq == answers[0].last_seq
        assert [e.state for e in watch(stub, queued[0])] == [pb.JOB_STATE_QUEUED, pb.JOB_STATE_CANCELLED]
    finally:
        for job_id in running + queued:
            stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=30)
    with pytest.raises(grpc.RpcError) as info:
        stub.CancelJob(pb.CancelJobRequest(job_id=done.job_id), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details().startswith(f"job_id: job {done.job_id} already ended SUCCEEDED"), info.value.details()


def test_the_queue_its_limit_and_cancelling_a_queued_job(stub: training_pb2_grpc.TrainingServiceStub) -> None:
    running = [submit(stub, LONG) for _ in range(2)]
    queued = [submit(stub, LONG) for _ in range(2)]
    try:
        for job_id in running:
            wait_running(stub, job_id)
        states = {j.job_id: j.state for j in stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs}
        assert [states[j] for j in running + queued] == [pb.JOB_STATE_RUNNING] * 2 + [pb.JOB_STATE_QUEUED] * 2
        with pytest.raises(grpc.RpcError) as info:
            run(stub, LONG, detach=True)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-queued-jobs" in info.value.details() and "2 are queued" in info.value.details()
        # A full queue refuses before the spec is planned (planning may build a data set of GBs for
        # nothing): a spec that planning would refuse gets the queue's refusal too.
        with pytest.raises(grpc.RpcError) as info:
            run(stub, {**LONG, "loss": {"name": "no_such_loss"}}, detach=True)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
        only_queued = stub.ListJobs(pb.ListJobsRequest(states=[pb.JOB_STATE_QUEUED]), timeout=10).jobs
        assert {j.job_id for j in only_queued} == set(queued)
        reply = stub.CancelJob(pb.CancelJobRequest(job_id=queued[0]), timeout=10)
        assert reply.job.state == pb.JOB_STATE_CANCELLED and reply.job.message == "cancelled before it ran"
        assert [e.state for e in watch(stub, queued[0])] == [pb.JOB_STATE_QUEUED, pb.JOB_STATE_CANCELLED]
        stub.CancelJob(pb.CancelJobRequest(job_id=running[0]), timeout=30)
        wait_running(stub, queued[1])  # the freed slot goes to the next queued job
    finally:
        for job_id in running + queued:
            stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=30)  # ended CANCELLED: answered as such


def test_inline_raw_data_gets_raw_parameters(stub: training_pb2_grpc.TrainingServiceStub) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], dtype=np.float32)).reshape(-1, 1)
    req = request(small_spec(model={"linear": {}}, loss={"name": "mse"}, metrics=["mae", "rmse"],
                             optimizer={"name": "sgd", "lr": 0.1}, epochs=20, batch_size=16))
    req.data.ClearField("builtin")
    req.data.inline.x.CopyFrom(encode(x))
    req.data.inline.y.CopyFrom(encode(y))
    final = [r.event for r in stub.TrainJob(req, timeout=60)][-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED
    assert set(final.metrics) == {"train_mae", "train_rmse", "val_mae", "val_rmse", "val_loss"}
    w = np.frombuffer(final.parameters["out.weight"].raw, "<f4")
    assert np.allclose(w, [1.0, -2.0, 0.5], atol=0.05) and final.metrics["val_rmse"] < 0.05


@pytest.mark.parametrize("spec, code, details", [
    (small_spec(optimizer={"name": "sgd", "param_groups": [{"patterns": ["*.weight"]}, {"patterns": ["x*"]}]}),
     grpc.StatusCode.INVALID_ARGUMENT, "optimizer.param_groups[1].patterns: ['x*'] matches no parameter"),
    (small_spec(loss={"name": "focall"}), grpc.StatusCode.NOT_FOUND, "loss.name: "),
    (small_spec(epochs=10**6), grpc.StatusCode.RESOURCE_EXHAUSTED, "epochs: epochs is 1000000; the server's limit"),
])
def test_bad_specs_are_refused_before_anything_runs(stub: training_pb2_grpc.TrainingServiceStub,
                                                    spec: dict[str, Any], code: grpc.StatusCode, details: str) -> None:
    before = len(stub.ListJobs(pb.ListJobsRequest(limit=1000), timeout=10).jobs)
    with pytest.raises(grpc.RpcError) as info:
        run(stub, spec)
    assert info.value.code() == code and info.value.details().startswith(details), info.value.details()
    assert len(stub.ListJobs(pb.ListJobsRequest(limit=1000), timeout=10).jobs) == before


@pytest.mark.parametrize("call, code, details", [
    (lambda s: s.GetJob(pb.GetJobRequest(job_id="0123456789ab"), timeout=10), grpc.StatusCode.NOT_FOUND,
     "job_id: no job '0123456789ab'"),
    (lambda s: s.GetJob(pb.GetJobRequest(job_id="../../etc"), timeout=10), grpc.StatusCode.INVALID_ARGUMENT,
     "job_id: '../../etc' is not a job id"),
    (lambda s: list(s.WatchJob(pb.WatchJobRequest(job_id="0123456789ab"), timeout=10)), grpc.StatusCode.NOT_FOUND,
     "job_id: no job"),
    (lambda s: s.CancelJob(pb.CancelJobRequest(job_id=""), timeout=10), grpc.StatusCode.INVALID_ARGUMENT,
     "job_id: '' is not a job id"),
    (lambda s: s.ListJobs(pb.ListJobsRequest(limit=5000), timeout=10), grpc.StatusCode.INVALID_ARGUMENT,
     "limit: is 5000"),
    # an unknown encoding is refused before the job is looked up, with or without its parameters
    (lambda s: s.GetJob(pb.GetJobRequest(job_id="0123456789ab", output_encoding=99), timeout=10),  # type: ignore
     grpc.StatusCode.INVALID_ARGUMENT, "output_encoding: is 99"),
    (lambda s: s.GetJob(pb.GetJobRequest(job_id="0123456789ab", output_encoding=99, include_parameters=True),
                        timeout=10),  # type: ignore[arg-type]
     grpc.StatusCode.INVALID_ARGUMENT, "output_encoding: is 99"),
])
def test_bad_job_requests(stub: training_pb2_grpc.TrainingServiceStub, call: Any, code: grpc.StatusCode,
                          details: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(stub)
    assert info.value.code() == code and info.value.details().startswith(details), info.value.details()


def test_a_mistyped_job_id_is_answered_with_the_id_meant(stub: training_pb2_grpc.TrainingServiceStub) -> None:
    job_id = submit(stub, small_spec())
    flip = {c: "0" if c != "0" else "1" for c in "0123456789abcdef"}
    typos = (flip[job_id[0]] + job_id[1:], job_id[:6] + flip[job_id[6]] + job_id[7:], job_id[:11] + flip[job_id[11]])
    for typo in typos:  # one character mistyped at the start, in the middle, at the end
        with pytest.raises(grpc.RpcError) as info:
            stub.GetJob(pb.GetJobRequest(job_id=typo), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # best first (the module's other jobs have random ids: one could follow it, rarely)
        assert info.value.details().startswith(f"job_id: no job {typo!r}; did you mean {job_id}"), info.value.details()
    unrelated = "".join(flip[c] for c in job_id)  # every character differs
    with pytest.raises(grpc.RpcError) as info:
        stub.GetJob(pb.GetJobRequest(job_id=unrelated), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and job_id not in info.value.details()


def test_a_watcher_that_joins_late_sees_everything(stub: training_pb2_grpc.TrainingServiceStub) -> None:
    job_id = submit(stub, MEDIUM)
    results: dict[str, list[pb.JobEvent]] = {}

    def follow(name: str, delay: float) -> None:
        time.sleep(delay)
        results[name] = watch(stub, job_id)

    threads = [threading.Thread(target=follow, args=(f"w{i}", 0.3 * i)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results["w0"] == results["w1"] == results["w2"]
    assert results["w0"][-1].state == pb.JOB_STATE_SUCCEEDED


def test_jobs_leave_no_bookkeeping_once_they_and_their_watchers_are_done(tmp_path: Any) -> None:
    """The manager's per-job entries (a watcher's wake-up event, a job's step count) end with the watcher and
    the job: a WatchJob of an ended job, and a queued job cancelled before it ran, each left one for the
    server's life (about 1 KB a job, however many were deleted)."""
    from lossd.server import ServerConfig, create_server
    from support.servers import serve_in_thread

    box: dict[str, Any] = {}

    async def build() -> Any:
        box["server"] = await create_server(ServerConfig(
            host="127.0.0.1", port=0, device="cpu", plugins="none", data_dir=str(tmp_path), max_jobs=1))
        return box["server"]

    with serve_in_thread(build) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        done = run(stub, small_spec())[-1]
        assert done.state == pb.JOB_STATE_SUCCEEDED
        busy = submit(stub, LONG)  # holds the one slot: the jobs below stay queued
        for _ in range(5):
            queued = submit(stub, small_spec())
            assert stub.CancelJob(pb.CancelJobRequest(job_id=queued), timeout=30).job.state == pb.JOB_STATE_CANCELLED
            assert watch(stub, queued)[-1].state == pb.JOB_STATE_CANCELLED
            assert watch(stub, done.job_id)[-1].state == pb.JOB_STATE_SUCCEEDED
            stub.DeleteJob(pb.DeleteJobRequest(job_id=queued), timeout=30)
        wait_running(stub, busy)
        stub.CancelJob(pb.CancelJobRequest(job_id=busy), timeout=60)
        assert watch(stub, busy)[-1].state == pb.JOB_STATE_CANCELLED
        manager = box["server"].jobs
        deadline = time.monotonic() + 10
        while manager.watchers and time.monotonic() < deadline:  # a stream ends on the server just after its last event
            time.sleep(0.05)
        assert manager.watchers == 0
        assert manager._waiters == {} and manager._steps_seen == {}


@pytest.mark.parametrize("method, call", [
    ("cancel", lambda s: s.CancelJob(pb.CancelJobRequest(job_id="0123456789ab"), timeout=10)),
    ("delete", lambda s: s.DeleteJob(pb.DeleteJobRequest(job_id="0123456789ab"), timeout=10)),
    ("list_jobs", lambda s: s.ListJobs(pb.ListJobsRequest(), timeout=10)),
    ("job", lambda s: s.GetJob(pb.GetJobRequest(job_id="0123456789ab"), timeout=10)),
])
def test_an_unexpected_error_is_internal_without_its_text(monkeypatch: pytest.MonkeyPatch, method: str,
                                                          call: Any) -> None:
    """gRPC answered an exception no code mapped UNKNOWN, with its class and message (a psycopg error named
    the statement: "Unexpected <class 'psycopg.errors.ReadOnlySqlTransaction'>: cannot execute DELETE ...")."""
    from lossd.server.training._manager import JobManager

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail of the store")

    monkeypatch.setattr(JobManager, method, broken)
    with start_in_process() as address, grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            call(training_pb2_grpc.TrainingServiceStub(channel))
    assert info.value.code() == grpc.StatusCode.INTERNAL, info.value
    assert "internal error in" in info.value.details() and "secret" not in info.value.details()


def test_list_jobs_over_the_message_limit_is_refused_naming_limit() -> None:
    """ListJobs built its reply with no budget: past --max-message-bytes gRPC answered "Sent message larger than
    max", naming nothing (the job audit, 2026-12-06: 90 jobs of 1 KB names under a 100 kB limit). Refused naming
    ``limit`` with how many fit; that many are listed."""
    import dataclasses

    from lossd.server import ServerConfig, create_server
    from support.servers import scratch_dir, serve_in_thread

    made: dict[str, Any] = {}

    async def build() -> Any:
        made["server"] = await create_server(ServerConfig(host="127.0.0.1", port=0, device="cpu", plugins="none",
                                                          data_dir=data_dir, max_jobs=1, max_queued_jobs=8))
        return made["server"]

    with scratch_dir("lossd-list-") as data_dir, serve_in_thread(build) as port, \
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        ids = [submit(stub, small_spec(name=f"{i}" + "x" * 1000, epochs=1)) for i in range(5)]
        jobs = made["server"].jobs
        one = len(stub.ListJobs(pb.ListJobsRequest(limit=1), timeout=10).SerializeToString())
        limits = dataclasses.replace(jobs.config.limits, max_message_bytes=3 * one + 10)  # three jobs fit
        jobs.config = dataclasses.replace(jobs.config, limits=limits)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListJobs(pb.ListJobsRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
        assert refused.value.details().startswith("limit: the 5 newest jobs make a reply of ") and \
            refused.value.details().endswith(f"over the message limit of {3 * one + 10} (--max-message-bytes); ask "
                                             "for at most 3"), refused.value.details()
        listed = [j.job_id for j in stub.ListJobs(pb.ListJobsRequest(limit=3), timeout=10).jobs]
        assert len(listed) == 3 and set(listed) <= set(ids), listed


def test_once_the_drain_begins_no_queued_job_starts() -> None:
    """The drain closed the gate, then awaited health's NOT_SERVING before the job manager closed: a slot freed
    meanwhile went to a queued job, whose worker started during the drain (the job audit, 2026-12-06: claims 1 ms
    after "shutting down"). ``LossdServer.drain`` now stops starts first (``JobManager.stop_starting``)."""
    from lossd.server import ServerConfig, create_server
    from support.servers import scratch_dir, serve_in_thread

    made: dict[str, Any] = {}

    async def build() -> Any:
        made["server"] = await create_server(ServerConfig(host="127.0.0.1", port=0, device="cpu", plugins="none",
                                                          data_dir=data_dir, max_jobs=1))
        return made["server"]

    with scratch_dir("lossd-drain-") as data_dir, serve_in_thread(build) as port, \
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        made["server"].jobs.stop_starting()
        job_id = submit(stub, small_spec(epochs=1))
        time.sleep(1.0)  # a start takes a few milliseconds
        assert stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job.state == pb.JOB_STATE_QUEUED
        assert not made["server"].jobs._running


def test_list_jobs_pages(address: str, stub: training_pb2_grpc.TrainingServiceStub,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    """ListJobs pages (AIP-158): it listed every job of the store in one message, at most 1000. Pages of 2 list
    what one page lists, a job submitted while paging is neither in a later page nor makes one repeat a job,
    and a bad page_size or page_token is refused naming it."""
    import base64

    from lossd.client import Client, _jobs

    for _ in range(3):
        submit(stub, small_spec())
    everything = [j.job_id for j in stub.ListJobs(pb.ListJobsRequest(page_size=1000), timeout=10).jobs]
    assert len(everything) >= 3
    paged: list[str] = []
    token = ""
    while True:
        page = stub.ListJobs(pb.ListJobsRequest(page_size=2, page_token=token), timeout=10)
        assert len(page.jobs) <= 2
        paged += [j.job_id for j in page.jobs]
        if not paged[2:]:  # after the first page: a job submitted now is newer than every listed one
            newer = submit(stub, small_spec())
        if not (token := page.next_page_token):
            break
    assert paged == everything and newer not in paged  # nothing skipped, nothing repeated, in order
    assert stub.ListJobs(pb.ListJobsRequest(page_size=10**6), timeout=10).jobs[0].job_id == newer  # clamped

    first = stub.ListJobs(pb.ListJobsRequest(page_size=1), timeout=10)
    token = first.next_page_token
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    edited = base64.urlsafe_b64encode(raw[:5] + bytes([raw[5] ^ 1]) + raw[6:]).decode().rstrip("=")
    for request_, field in [(pb.ListJobsRequest(page_size=-1), "page_size: is -1"),
                            (pb.ListJobsRequest(page_token="../../etc/passwd"), "page_token: "),
                            (pb.ListJobsRequest(page_token=edited), "page_token: "),
                            # what base64's decoder skips (characters outside its alphabet) or takes (padding)
                            (pb.ListJobsRequest(page_token=token[:5] + "!!**" + token[5:]), "page_token: "),
                            (pb.ListJobsRequest(page_token=token + "=="), "page_token: "),
                            (pb.ListJobsRequest(page_token=token, states=[pb.JOB_STATE_QUEUED]), "page_token: ")]:
        with pytest.raises(grpc.RpcError) as info:
            stub.ListJobs(request_, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
        assert info.value.details().startswith(field), info.value.details()

    monkeypatch.setattr(_jobs, "MAX_PAGE_SIZE", 2)  # the SDK and the CLI read every page
    with Client(address) as client:
        assert [j.job_id for j in client.jobs()] == [newer, *everything]
        assert [j.job_id for j in client.jobs(limit=3)] == [newer, *everything][:3]
