"""The SDK's training methods and ``lossd train/jobs/watch/cancel/plot`` against a real server
with training: parity with the raw stub, re-attaching, spec forms, progress, the async twin, plots."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import signal
import subprocess
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from lossd.client import (
    AsyncClient,
    Cancelled,
    Client,
    DeadlineExceeded,
    Progress,
    TrainResult,
    Unavailable,
    load_spec,
)
from lossd.client._extras import MissingExtra
from lossd.client._training import MAX_REATTACH, TRAIN_JOB, WATCH_JOB, JobFollower, build_module
from lossd.v1 import lossd_pb2, training_pb2_grpc
from lossd.v1 import training_pb2 as pb
from support.servers import start_in_process
from support.tools import run_tool, tool_env, tool_path
from support.training import request, small_spec

#: A job that runs for minutes unless cancelled.
LONG = small_spec(data={"builtin": {"name": "rings"}}, epochs=500, batch_size=100, metrics=[])
SPEC = small_spec(epochs=3, regularization={"l2": 0.001})


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with start_in_process(max_jobs=2, max_queued_jobs=4) as addr:
        yield addr


@pytest.fixture(scope="module")
def client(address: str) -> Iterator[Client]:
    with Client(address, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def result(client: Client) -> TrainResult:
    return client.train(SPEC, progress=False)


def raw_final(address: str, job_id: str) -> pb.JobEvent:
    """The terminal event as the plain generated stub sees it (exact float32 bytes)."""
    with grpc.insecure_channel(address) as ch:
        stub = training_pb2_grpc.TrainingServiceStub(ch)
        last = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10).job.last_seq
        req = pb.WatchJobRequest(job_id=job_id, after_seq=last - 1, output_encoding=lossd_pb2.TENSOR_ENCODING_RAW)
        (reply,) = list(stub.WatchJob(req, timeout=30))
        return reply.event


def test_train_returns_what_the_terminal_event_holds(address: str, result: TrainResult) -> None:
    final = raw_final(address, result.job_id)
    assert result.state == "SUCCEEDED" and result.succeeded
    assert result.metrics == dict(final.metrics) and set(result.metrics) == {"train_accuracy", "val_accuracy", "val_loss"}
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.history[-1]["loss_parts"].keys() == {"loss", "l2"}  # only the parts in use
    assert sorted(result.parameters) == sorted(final.parameters)
    for name, t in final.parameters.items():
        expected = np.frombuffer(t.raw, "<f4").reshape(tuple(t.shape))
        got = result.parameters[name]
        assert isinstance(got, np.ndarray) and got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


def test_parameters_load_into_a_torch_module(client: Client, result: TrainResult) -> None:
    torch = pytest.importorskip("torch")
    model = result.build_model()
    assert [n for n, _ in model.named_parameters()] == ["fc1.weight", "fc1.bias", "out.weight", "out.bias"]
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), torch.tensor(result.parameters[name]))
    assert isinstance(model.out_act, torch.nn.Sigmoid)
    as_torch = client.get_result(result.job_id, as_torch=True)
    assert all(isinstance(v, torch.Tensor) for v in as_torch.parameters.values())
    assert as_torch.history == result.history and as_torch.spec == request(SPEC)
    fresh = build_module(as_torch.spec, 2, 1)  # an untrained module of the same layout
    assert as_torch.load_into(fresh) is fresh
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters()))


def test_spec_forms_are_equivalent(tmp_path: Path, client: Client, result: TrainResult) -> None:
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    yaml = pytest.importorskip("yaml")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    expected = request(SPEC)
    for form in (SPEC, str(tmp_path / "spec.json"), tmp_path / "spec.yaml", expected):
        assert load_spec(form) == expected
    again = client.train(tmp_path / "spec.yaml", progress=False)  # deterministic: same parameters
    assert again.job_id != result.job_id
    for name in result.parameters:
        np.testing.assert_array_equal(again.parameters[name], result.parameters[name])


def test_spec_errors_name_the_field(tmp_path: Path, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"spec: epoch: no such field \(did you mean epochs\?\); the fields of "
                                         r"TrainJobRequest: model, data, .*batch_size"):
        client.train({"epoch": 3}, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        load_spec({"epochs": "three"})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_spec(tmp_path / "bad.json")
    if importlib.util.find_spec("yaml") is not None:  # a YAML error is a clean refusal, not a traceback
        (tmp_path / "bad.yaml").write_text("epochs: [2\n")
        with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
            load_spec(tmp_path / "bad.yaml")
        (tmp_path / "tag.yaml").write_text('!!python/object/apply:os.system ["echo no"]\n')
        with pytest.raises(ValueError, match="tag.yaml: not valid YAML: could not determine a constructor"):
            load_spec(tmp_path / "tag.yaml")  # safe_load: nothing runs
        (tmp_path / "deep.yaml").write_text("a: " + "[" * 100_000)  # PyYAML's scanner: a RecursionError
        with pytest.raises(ValueError, match="deep.yaml: nested too deeply"):
            load_spec(tmp_path / "deep.yaml")
    # json's decoder: "[" * 1000 came out of `lossd train` as a RecursionError's traceback (the SDK audit, 2026-12-06)
    (tmp_path / "deep.json").write_text('{"data": {"inline": {"x": ' + "[" * 1000 + "]" * 1000 + "}}}")
    with pytest.raises(ValueError, match="deep.json: nested too deeply"):
        load_spec(tmp_path / "deep.json")
    (tmp_path / "s.yml").write_text("epochs: 2\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(MissingExtra, match="s.yml needs yaml, which is not installed: pip install pyyaml"):
        load_spec(tmp_path / "s.yml")


def test_progress_lines_without_tqdm_and_bar_with_it(client: Client) -> None:
    out = io.StringIO()
    client.train(small_spec(), progress=Progress(stream=out, use_tqdm=False))
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == ["1/2", "2/2"]
    assert "val_accuracy=" in lines[0] and lines[-1].startswith("SUCCEEDED")
    pytest.importorskip("tqdm")
    bar = io.StringIO()
    client.train(small_spec(), progress=Progress(stream=bar))
    assert "epoch 2/2" in bar.getvalue() and "12/12" in bar.getvalue()


def test_submit_watch_get_jobs_cancel(client: Client) -> None:
    job_id = client.submit(LONG)
    events = []
    for event in client.watch(job_id):
        events.append(event)
        if event.kind == pb.JOB_EVENT_KIND_STEP:
            break
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert client.get_job(job_id).state == pb.JOB_STATE_RUNNING
    assert job_id in [j.job_id for j in client.jobs(["RUNNING"])]
    assert job_id not in [j.job_id for j in client.jobs(["SUCCEEDED"])]
    assert client.cancel(job_id).state == pb.JOB_STATE_CANCELLED
    rest = list(client.watch(job_id, after_seq=events[-1].seq))
    assert rest[0].seq == events[-1].seq + 1 and rest[-1].state == pb.JOB_STATE_CANCELLED
    assert client.get_result(job_id).state == "CANCELLED"


def test_get_result_of_a_running_job_waits_at_most_its_timeout(client: Client) -> None:
    """``timeout`` went to the GetJob call only: the watch for the job's end had no deadline."""
    from lossd.client import DeadlineExceeded

    job_id = client.submit(LONG)
    try:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.get_result(job_id, timeout=1.0)
        assert time.monotonic() - started < 10
    finally:
        client.cancel(job_id)


class DroppingClient(Client):
    """Drops the TrainJob stream with UNAVAILABLE after a few events, as a restarting server would."""

    def _stream(self, method: Any, request: Any, timeout: Any, decode: Any) -> Iterator[Any]:
        events = super()._stream(method, request, timeout, decode)
        if method is not TRAIN_JOB:
            yield from events
            return
        for i, event in enumerate(events):
            if i == 3:
                raise Unavailable("connection dropped (test)")
            yield event


def test_train_reattaches_after_a_dropped_stream(address: str, result: TrainResult) -> None:
    with DroppingClient(address) as c:
        again = c.train(SPEC, progress=False)
    assert again.state == "SUCCEEDED" and again.history == result.history
    for name in result.parameters:
        np.testing.assert_array_equal(again.parameters[name], result.parameters[name])


class DropsEveryStream(Client):
    """Every stream (TrainJob, then each re-attached WatchJob) drops with UNAVAILABLE after 3 events, as
    short server restarts or network blips would; each re-attach succeeds at once."""

    drops = 0

    def _stream(self, method: Any, request: Any, timeout: Any, decode: Any) -> Iterator[Any]:
        for i, event in enumerate(super()._stream(method, request, timeout, decode)):
            if i == 3:
                self.drops += 1
                raise Unavailable("connection dropped (test)")
            yield event


def test_the_reattach_budget_is_per_outage_not_per_run(address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """More drops than MAX_REATTACH over one run, each followed by events: train follows the job to its end."""
    monkeypatch.setattr(JobFollower, "backoff_s", lambda self: 0.0)  # the count is under test, not the waits
    spec = small_spec(epochs=40, step_events_per_second=0, metrics=[])  # QUEUED, RUNNING, 40 epochs, SUCCEEDED
    with DropsEveryStream(address) as c:
        r = c.train(spec, progress=False)
    assert r.state == "SUCCEEDED" and [h["epoch"] for h in r.history] == list(range(1, 41))
    assert c.drops > MAX_REATTACH


class RecordsStreams(Client):
    """Records each stream's method and timeout; drops the TrainJob stream after 3 events; ``outage``: after
    its first event, and every WatchJob fails with UNAVAILABLE at once (a server that does not come back)."""

    def __init__(self, *args: Any, outage: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outage = outage
        self.streams: list[tuple[Any, Any]] = []

    def _stream(self, method: Any, request: Any, timeout: Any, decode: Any) -> Iterator[Any]:
        self.streams.append((method, timeout))
        if method is WATCH_JOB and self.outage:
            raise Unavailable("connection refused (test)")
        for i, event in enumerate(super()._stream(method, request, timeout, decode)):
            if method is TRAIN_JOB and i == (1 if self.outage else 3):
                raise Unavailable("connection dropped (test)")
            yield event


class AsyncRecordsStreams(AsyncClient):
    """:class:`RecordsStreams`'s recording and dropping, on the AsyncClient."""

    streams: list[tuple[Any, Any]]

    async def _stream(self, method: Any, request: Any, timeout: Any, decode: Any) -> AsyncIterator[Any]:
        self.streams.append((method, timeout))
        i = 0
        async for event in super()._stream(method, request, timeout, decode):
            if i == 3 and method is TRAIN_JOB:
                raise Unavailable("connection dropped (test)")
            i += 1
            yield event


def test_train_timeout_bounds_the_whole_run_reattaches_included(address: str) -> None:
    """A re-attached stream gets what is left of train's timeout, not the whole of it again."""
    with RecordsStreams(address) as c:
        assert c.train(SPEC, progress=False, timeout=60).state == "SUCCEEDED"

    async def main() -> list[tuple[Any, Any]]:
        async with AsyncRecordsStreams(address) as ac:
            ac.streams = []
            assert (await ac.train(SPEC, timeout=60)).state == "SUCCEEDED"
            return ac.streams

    for streams in (c.streams, asyncio.run(main())):
        (first, first_timeout), (then, left) = streams
        assert (first, first_timeout, then) == (TRAIN_JOB, 60, WATCH_JOB)
        assert 0 < left < 60


def test_an_outage_longer_than_the_timeout_raises_deadline_exceeded(address: str, client: Client) -> None:
    with RecordsStreams(address, outage=True) as c:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="the timeout ran out while re-attaching") as err:
            c.train(SPEC, progress=False, timeout=2.0)
        assert time.monotonic() - start < 3.0  # given up when the next backoff would overrun (not after 31 s)
        assert isinstance(err.value.__cause__, Unavailable)
        job_id = err.value.message.split()[1].rstrip(":")  # "job <id>: the timeout ran out ..."
    assert client.get_result(job_id).state == "SUCCEEDED"  # the job ran on


def test_a_watch_in_flight_when_the_client_closes_raises_cancelled_in_both_clients(client: Client) -> None:
    job_id = client.submit(LONG)
    try:
        sync = Client(client.target)
        with pytest.raises(Cancelled):
            for _ in sync.watch(job_id):
                sync.close()  # the stream is open: the next event never comes

        async def main() -> None:
            c = AsyncClient(client.target)
            with pytest.raises(Cancelled, match="closed while the call was in flight"):
                async for _ in c.watch(job_id):
                    await c.close()

        asyncio.run(main())
    finally:
        client.cancel(job_id)


def test_async_client_trains_and_watches(address: str, result: TrainResult) -> None:
    async def main() -> tuple[TrainResult, list[pb.JobEvent], str]:
        async with AsyncClient(address) as c:
            r = await c.train(SPEC)
            job_id = await c.submit(small_spec())
            events = [e async for e in c.watch(job_id)]
            job = await c.get_job(job_id)
            assert job_id in [j.job_id for j in await c.jobs()]
            assert [h["epoch"] for h in await c.history(job_id)] == [1, 2]
            assert (await c.get_result(job_id)).history == await c.history(job_id)
            return r, events, pb.JobState.Name(job.state)

    r, events, state = asyncio.run(main())
    for name in result.parameters:
        np.testing.assert_array_equal(r.parameters[name], result.parameters[name])
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED and state == "JOB_STATE_SUCCEEDED"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_result_plot_writes_a_png(tmp_path: Path, result: TrainResult) -> None:
    pytest.importorskip("matplotlib")
    fig = result.plot(path=tmp_path / "curve.png")
    assert png_size(tmp_path / "curve.png") == (1000, 800)
    assert len(fig.axes) == 2  # a constant learning rate has no panel of its own
    assert "learning rate 0.01, constant" in fig._suptitle.get_text()
    labels = {line.get_label() for line in fig.axes[0].lines} | {line.get_label() for line in fig.axes[1].lines}
    assert {"objective", "loss", "l2", "val_loss", "train_accuracy", "val_accuracy"} <= labels


def lossd(address: str, *args: str) -> Any:
    return run_tool([tool_path("lossd", "pip install -e . creates it"), "--target", address, *args],
                    env=tool_env(), timeout=120)


def test_cli_watch_into_a_closed_pipe_exits_quietly(address: str, client: Client) -> None:
    """``lossd watch ID | head -1``: the reader goes away while events still come; no traceback."""
    job_id = client.submit(LONG)
    try:
        proc = subprocess.Popen([tool_path("lossd", "pip install -e . creates it"), "--target", address, "watch",
                                 job_id], env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        first = json.loads(proc.stdout.readline())
        proc.stdout.close()  # as head -1 does after its line; the running job's next event hits the closed pipe
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 141, stderr  # as a shell reports a process ended by SIGPIPE
        assert stderr == "" and first["job_id"] == job_id
    finally:
        client.cancel(job_id)


def test_cli_train_jobs_watch_cancel_plot(tmp_path: Path, address: str, result: TrainResult) -> None:
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    proc = lossd(address, "train", str(tmp_path / "spec.json"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    table = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert table["state"] == "SUCCEEDED" and table["epochs"] == "3"
    assert float(table["val_accuracy"]) == pytest.approx(result.metrics["val_accuracy"], abs=1e-6)
    job_id = table["job"]

    proc = lossd(address, "train", str(tmp_path / "spec.json"))  # progress on stderr (tqdm or lines)
    assert proc.returncode == 0 and "epoch 3/3" in proc.stderr, proc.stderr

    proc = lossd(address, "jobs")
    assert proc.returncode == 0 and proc.stdout.startswith("JOB") and job_id in proc.stdout

    proc = lossd(address, "watch", job_id)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and events[0]["state"] == "JOB_STATE_QUEUED"
    assert events[-1]["state"] == "JOB_STATE_SUCCEEDED"

    proc = lossd(address, "plot", job_id, "--out", str(tmp_path / "c.png"))
    assert proc.returncode == 0, proc.stderr
    assert png_size(tmp_path / "c.png") == (1000, 800)

    proc = lossd(address, "train", str(tmp_path / "spec.json"), "--detach")
    assert proc.returncode == 0 and len(proc.stdout.strip()) == 12
    long_id = Client(address).submit(LONG)
    proc = lossd(address, "cancel", long_id)
    assert proc.returncode == 0 and proc.stdout.split() == [long_id, "CANCELLED"]

    (tmp_path / "bad.json").write_text(json.dumps({"epochs": 0}))
    proc = lossd(address, "train", str(tmp_path / "bad.json"), "--no-progress")
    assert proc.returncode == 1 and "INVALID_ARGUMENT" in proc.stderr
    proc = lossd(address, "train", str(tmp_path / "missing.json"))
    assert proc.returncode == 2 and "missing.json" in proc.stderr


def test_cli_train_interrupted_says_the_job_runs_on(tmp_path: Path, address: str, client: Client) -> None:
    """Ctrl-C stops `lossd train`, not the job: stderr names the job and how to reach it."""
    (tmp_path / "long.json").write_text(json.dumps(LONG))
    proc = subprocess.Popen([tool_path("lossd", "pip install -e . creates it"), "--target", address, "train",
                             str(tmp_path / "long.json")],
                            env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    stderr = bytearray()
    progressed = threading.Event()

    def read() -> None:  # tqdm's bar ends no line: read what comes, as it comes
        assert proc.stderr is not None
        while chunk := proc.stderr.read1(4096):  # type: ignore[attr-defined]
            stderr.extend(chunk)
            if b"epoch " in stderr:
                progressed.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    job_id = ""
    try:
        assert progressed.wait(60), stderr.decode()  # the progress shows an event: the job id is known
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
        reader.join(10)
        jobs = [j for j in client.jobs(["QUEUED", "RUNNING"]) if f"job {j.job_id} keeps running" in stderr.decode()]
        assert len(jobs) == 1, stderr.decode()
        job_id = jobs[0].job_id
        assert stderr.decode().rstrip().endswith(
            f"job {job_id} keeps running on the server: lossd watch {job_id} / lossd cancel {job_id}")
    finally:
        if proc.poll() is None:
            proc.kill()
        if job_id:
            client.cancel(job_id)
