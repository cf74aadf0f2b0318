"""Metrics and JSON logs of a served process (``lossd serve --metrics-port 0 --log-format json``).

Real calls through real gRPC, then: the Prometheus endpoint is scraped and
parsed (counts, codes, canonical loss names, exact message bytes), and the
process's output is parsed line by line as JSON (access lines with method,
loss, status, duration and request id; no tensor values, no token).
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lossd.v1 import lossd_pb2, lossd_pb2_grpc, training_pb2, training_pb2_grpc
from support.gated_loss import LossGate
from support.servers import ServedProcess

#: Distinctive values that must never reach the log.
SECRET_VALUE = 31415.92
TOKEN = "sekrit-token-do-not-log"


def _tensor(values: list[float]) -> lossd_pb2.Tensor:
    return lossd_pb2.Tensor(dtype="float32", shape=[len(values)], values=values)


def _mse(loss: str = "mse_loss") -> lossd_pb2.EvaluateLossRequest:
    return lossd_pb2.EvaluateLossRequest(
        loss=loss, inputs={"input": _tensor([SECRET_VALUE, 2.0]), "target": _tensor([0.0, 0.0])})


class Scenario:
    """The served process, what was sent, and what came back."""

    def __init__(self, proc: ServedProcess, metrics_url: str) -> None:
        self.proc = proc
        self.metrics_url = metrics_url
        self.sent_bytes = 0  # EvaluateLoss request bytes
        self.received_bytes = 0  # EvaluateLoss reply bytes
        self.job_id = ""
        self.training = False
        self.job_steps = 0
        self.metrics_text = ""
        self.lines: list[str] = []


def _metadata(request_id: str) -> tuple[tuple[str, str], ...]:
    return (("x-request-id", request_id), ("authorization", f"Bearer {TOKEN}"))


def _metrics_url(proc: ServedProcess) -> str:
    """The metrics endpoint the served process logged (it binds an ephemeral port)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = re.search(r"metrics on (http://\S+/metrics)", "".join(proc.log))
        if m:
            return m.group(1)
        time.sleep(0.05)
    raise AssertionError("no 'metrics on' line:\n" + "".join(proc.log))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    workdir: Path = tmp_path_factory.mktemp("observed")
    with ServedProcess.start(workdir, "--metrics-port", "0", "--log-format", "json") as proc:
        url = _metrics_url(proc)
        s = Scenario(proc, url)
        with grpc.insecure_channel(proc.address) as channel:
            loss = lossd_pb2_grpc.LossServiceStub(channel)
            for request_id, request in (("obs-ok-1", _mse()), ("obs-alias-2", _mse("MSELoss"))):
                reply = loss.EvaluateLoss(request, metadata=_metadata(request_id), timeout=60)
                s.sent_bytes += request.ByteSize()
                s.received_bytes += reply.ByteSize()
            bad = lossd_pb2.EvaluateLossRequest(loss="no_such_loss")
            with pytest.raises(grpc.RpcError) as e:
                loss.EvaluateLoss(bad, metadata=_metadata("obs-missing-3"), timeout=60)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
            s.sent_bytes += bad.ByteSize()
            items = [
                lossd_pb2.EvaluateLossStreamRequest(id="a", request=_mse("l1_loss")),
                lossd_pb2.EvaluateLossStreamRequest(id="b", request=lossd_pb2.EvaluateLossRequest(loss="zzz")),
            ]
            replies = list(loss.EvaluateLossStream(iter(items), metadata=_metadata("obs-stream-4"), timeout=60))
            assert [r.HasField("error") for r in replies] == [False, True]
            loss.ListLosses(lossd_pb2.ListLossesRequest(), timeout=60)

            listed = "TrainingService" in training_pb2.DESCRIPTOR.services_by_name
            if listed:
                s.training = True
                spec = training_pb2.TrainJobRequest(
                    name="observed", epochs=1, batch_size=32,
                    model=training_pb2.ModelSpec(linear=training_pb2.LinearModel()),
                    data=training_pb2.DataSpec(builtin=training_pb2.BuiltinData(name="rings")),
                    loss=training_pb2.TrainingLoss(name="binary_cross_entropy_with_logits"),
                    optimizer=training_pb2.OptimizerSpec(name="sgd", lr=0.1),
                )
                spec.data.builtin.params.update({"n_positive": 32, "n_negative": 32})
                events = list(training_pb2_grpc.TrainingServiceStub(channel).TrainJob(
                    spec, metadata=_metadata("obs-job-5"), timeout=120))
                assert events[-1].event.state == training_pb2.JOB_STATE_SUCCEEDED
                s.job_steps = events[-1].event.total_steps
                s.job_id = events[-1].event.job_id
        # A stream's handled count is recorded when its handler returns, which may be just after
        # the client has read the last event: wait for it (bounded).
        deadline = time.monotonic() + 10
        while True:
            s.metrics_text = urllib.request.urlopen(url, timeout=10).read().decode()
            if not s.training or 'grpc_method="TrainJob"' not in s.metrics_text:
                break
            if re.search(r'grpc_server_handled_total\{[^}]*grpc_method="TrainJob"', s.metrics_text):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        proc.proc.terminate()
        assert proc.proc.wait(30) == 0
    s.lines = [line for line in "".join(proc.log).splitlines() if line.strip()]
    yield s


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


EVALUATE = {"grpc_service": "lossd.v1.LossService", "grpc_method": "EvaluateLoss", "grpc_type": "unary"}
STREAM = {"grpc_service": "lossd.v1.LossService", "grpc_method": "EvaluateLossStream", "grpc_type": "bidi_stream"}


def test_rpc_counts_and_latency_by_method_and_code(scenario: Scenario) -> None:
    s = _samples(scenario.metrics_text)
    assert _value(s, "grpc_server_started_total", **EVALUATE) == 3
    assert _value(s, "grpc_server_handled_total", **EVALUATE, grpc_code="OK") == 2
    assert _value(s, "grpc_server_handled_total", **EVALUATE, grpc_code="NOT_FOUND") == 1
    assert _value(s, "grpc_server_handling_seconds_count", **EVALUATE, grpc_code="OK") == 2
    assert _value(s, "grpc_server_handling_seconds_sum", **EVALUATE, grpc_code="OK") > 0
    assert _value(s, "grpc_server_handling_seconds_bucket", **EVALUATE, grpc_code="OK", le="+Inf") == 2
    assert _value(s, "grpc_server_handled_total", **STREAM, grpc_code="OK") == 1
    assert _value(s, "grpc_server_msg_received_total", **STREAM) == 2
    assert _value(s, "grpc_server_msg_sent_total", **STREAM) == 2
    list_losses = {"grpc_service": "lossd.v1.LossService", "grpc_method": "ListLosses", "grpc_type": "unary"}
    assert _value(s, "grpc_server_handled_total", **list_losses, grpc_code="OK") == 1


def test_evaluations_per_canonical_loss(scenario: Scenario) -> None:
    s = _samples(scenario.metrics_text)
    assert _value(s, "lossd_evaluations_total", loss="mse_loss", code="OK") == 2  # "MSELoss" is an alias
    assert _value(s, "lossd_evaluations_total", loss="l1_loss", code="OK") == 1  # a stream item
    assert _value(s, "lossd_evaluations_total", loss="unknown", code="NOT_FOUND") == 2  # unary + stream item
    assert not any(name == "lossd_evaluations_total" and ("loss", "zzz") in labels for name, labels in s)


def test_the_batch_window_counts_a_lone_clients_calls_as_evaluated_at_once(scenario: Scenario) -> None:
    """Two small mse calls one after the other (the default window): neither waits, no group forms
    (the unknown loss and the stream item are not the window's)."""
    s = _samples(scenario.metrics_text)
    assert _value(s, "lossd_batch_window_calls_total", way="at_once") == 2
    assert _value(s, "lossd_batch_window_calls_total", way="waited") == 0
    assert _value(s, "lossd_batch_window_groups_total") == 0


def test_message_bytes_are_exact(scenario: Scenario) -> None:
    s = _samples(scenario.metrics_text)
    io = {"grpc_service": "lossd.v1.LossService", "grpc_method": "EvaluateLoss"}
    assert _value(s, "lossd_rpc_received_bytes_total", **io) == scenario.sent_bytes
    assert _value(s, "lossd_rpc_sent_bytes_total", **io) == scenario.received_bytes


def test_job_metrics_are_exposed(scenario: Scenario) -> None:
    s = _samples(scenario.metrics_text)
    states = {dict(labels)["state"] for name, labels in s if name == "lossd_jobs"}
    assert {"QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "INTERRUPTED"} <= states
    assert ("lossd_job_steps_total", frozenset()) in s
    assert _value(s, "lossd_build_info", version=__import__("lossd").__version__) == 1
    if scenario.training:
        job = {"grpc_service": "lossd.v1.TrainingService", "grpc_method": "TrainJob", "grpc_type": "server_stream"}
        assert _value(s, "grpc_server_handled_total", **job, grpc_code="OK") == 1
        # The engine feeds the job metrics: one job, ended SUCCEEDED, every optimizer step counted.
        assert _value(s, "lossd_jobs", state="SUCCEEDED") == 1 and _value(s, "lossd_jobs", state="RUNNING") == 0
        assert _value(s, "lossd_job_steps_total") == scenario.job_steps > 0


def test_every_output_line_is_json(scenario: Scenario) -> None:
    records = [json.loads(line) for line in scenario.lines]  # raises on any plain line
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    messages = [r["message"] for r in records]
    assert any(m.startswith("lossd ") and " listening on " in m for m in messages)
    assert "lossd stopped" in messages


def _access(scenario: Scenario, request_id: str) -> dict[str, Any]:
    found = [r for r in map(json.loads, scenario.lines) if r.get("request_id") == request_id]
    assert len(found) == 1, (request_id, found)
    return found[0]


def test_access_lines(scenario: Scenario) -> None:
    ok = _access(scenario, "obs-ok-1")
    assert ok["logger"] == "lossd.access"
    assert (ok["method"], ok["service"], ok["loss"], ok["status"]) == (
        "EvaluateLoss", "lossd.v1.LossService", "mse_loss", "OK")
    assert isinstance(ok["duration_ms"], float) and ok["duration_ms"] >= 0
    assert ok["peer"].startswith("ipv4:127.0.0.1:")
    assert _access(scenario, "obs-alias-2")["loss"] == "mse_loss"
    missing = _access(scenario, "obs-missing-3")
    assert (missing["loss"], missing["status"]) == ("unknown", "NOT_FOUND")
    stream = _access(scenario, "obs-stream-4")
    assert (stream["method"], stream["status"], stream["items"], stream["loss"]) == (
        "EvaluateLossStream", "OK", 2, "l1_loss,unknown")
    if scenario.training:
        job = _access(scenario, "obs-job-5")
        assert (job["method"], job["status"], job["job_id"]) == ("TrainJob", "OK", scenario.job_id)
        assert job["loss"] == "binary_cross_entropy_with_logits"


def test_generated_request_ids_are_unique(scenario: Scenario) -> None:
    records = [json.loads(line) for line in scenario.lines]
    generated = [r["request_id"] for r in records if r.get("logger") == "lossd.access"
                 and not r["request_id"].startswith("obs-")]
    assert generated and all(re.fullmatch(r"[0-9a-f]{16}", g) for g in generated)
    assert len(set(generated)) == len(generated)


def test_no_tensor_values_and_no_token_in_logs(scenario: Scenario) -> None:
    text = "\n".join(scenario.lines)
    assert TOKEN not in text
    assert "Bearer" not in text
    assert "31415" not in text


def test_off_by_default(served_process: ServedProcess) -> None:
    """A plain `lossd serve`: no metrics endpoint, no access lines, plain text."""
    text = "".join(served_process.log)
    assert "metrics on" not in text
    assert "lossd.access" not in text
    assert not text.lstrip().startswith("{")


def test_made_up_methods_refused_at_admission_are_counted_under_one_name(tmp_path: Path) -> None:
    """Calls without the token to methods the server does not serve are refused (UNAUTHENTICATED) and
    counted as service and method ``unknown``: the path is the caller's, and a series per path grew the
    server without bound (5,000 such calls made 170,000 series and 53 MiB before)."""
    unknown = {"grpc_service": "unknown", "grpc_method": "unknown", "grpc_type": "bidi_stream"}

    def handled(url: str, calls: int) -> tuple[str, dict[Any, float]]:
        """The metrics once all ``calls`` are recorded (a call is recorded as its handler ends, which
        may be just after the client has its status)."""
        deadline = time.monotonic() + 10
        while True:
            text = urllib.request.urlopen(url, timeout=10).read().decode()
            s = _samples(text)
            done = _value(s, "grpc_server_handled_total", **unknown, grpc_code="UNAUTHENTICATED")
            if done >= calls or time.monotonic() > deadline:
                return text, s
            time.sleep(0.05)

    with ServedProcess.start(tmp_path, "--metrics-port", "0", env={"LOSSD_TOKEN": TOKEN}) as proc:
        url = _metrics_url(proc)
        with grpc.insecure_channel(proc.address) as channel:
            def made_up(k: int) -> grpc.StatusCode:
                try:
                    channel.unary_unary(f"/made.up{k}.Service/Method{k}")(b"", timeout=30)
                except grpc.RpcError as e:
                    return e.code()  # type: ignore[no-any-return]
                return grpc.StatusCode.OK

            assert made_up(0) == grpc.StatusCode.UNAUTHENTICATED
            series = len(handled(url, 1)[1])
            assert {made_up(k) for k in range(1, 101)} == {grpc.StatusCode.UNAUTHENTICATED}
            text, s = handled(url, 101)
    assert _value(s, "grpc_server_handled_total", **unknown, grpc_code="UNAUTHENTICATED") == 101
    assert len(s) == series
    assert "made.up" not in text


def test_ambiguous_loss_names_are_counted_and_logged_as_unknown(tmp_path: Path) -> None:
    """``focal``, ``FocalLoss``, ``SSIMLoss``: names the registry knows but refuses (NOT_FOUND: they mean
    different losses in different libraries). Such a call was not counted and its access line had no
    loss; in a stream, every later reply was counted under the loss of the item after its own."""
    with ServedProcess.start(tmp_path, "--metrics-port", "0", "--log-format", "json", "--plugins", "none") as proc:
        url = _metrics_url(proc)
        with grpc.insecure_channel(proc.address) as channel:
            loss = lossd_pb2_grpc.LossServiceStub(channel)
            for request_id, name in (("amb-unary-1", "focal"), ("amb-unary-2", "FocalLoss")):
                with pytest.raises(grpc.RpcError) as e:
                    loss.EvaluateLoss(_mse(name), metadata=_metadata(request_id), timeout=60)
                assert e.value.code() == grpc.StatusCode.NOT_FOUND
            names = ["mse_loss", "focal", "l1_loss", "SSIMLoss", "MSELoss"]
            items = [lossd_pb2.EvaluateLossStreamRequest(id=str(k), request=_mse(n)) for k, n in enumerate(names)]
            replies = list(loss.EvaluateLossStream(iter(items), metadata=_metadata("amb-stream-3"), timeout=60))
            assert [r.error.code for r in replies] == ["", "NOT_FOUND", "", "NOT_FOUND", ""]
        deadline = time.monotonic() + 10  # a call is recorded as its handler ends: wait for the stream's
        while True:
            s = _samples(urllib.request.urlopen(url, timeout=10).read().decode())
            if _value(s, "grpc_server_handled_total", **STREAM, grpc_code="OK") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        proc.proc.terminate()
        assert proc.proc.wait(30) == 0
    assert _value(s, "lossd_evaluations_total", loss="unknown", code="NOT_FOUND") == 4  # 2 unary + 2 items
    assert _value(s, "lossd_evaluations_total", loss="mse_loss", code="OK") == 2
    assert _value(s, "lossd_evaluations_total", loss="l1_loss", code="OK") == 1
    assert sum(v for (name, _), v in s.items() if name == "lossd_evaluations_total") == 7
    records = [json.loads(line) for line in "".join(proc.log).splitlines() if line.strip()]
    access = {r["request_id"]: r for r in records if r.get("logger") == "lossd.access"}
    assert (access["amb-unary-1"]["loss"], access["amb-unary-1"]["status"]) == ("unknown", "NOT_FOUND")
    assert access["amb-unary-2"]["loss"] == "unknown"
    assert (access["amb-stream-3"]["loss"], access["amb-stream-3"]["items"]) == ("mse_loss,unknown,l1_loss", 5)


def test_a_training_workers_lines_are_json_too(tmp_path: Path) -> None:
    """A job whose loss makes torch warn (kl_div's reduction='mean'), with ``--log-format json``: the warning,
    raised in the job's worker process (and in the server's trial run of the loss at submission), was written
    as Python's two plain lines; it is now a JSON line from the worker (logger ``py.warnings``)."""
    from support.training import request, small_spec

    spec = request(small_spec(loss={"name": "kl_div", "params": {"reduction": "mean"}}, epochs=1))
    with ServedProcess.start(tmp_path, "--log-format", "json", "--plugins", "none",
                             "--data-dir", str(tmp_path / "data")) as proc:
        with grpc.insecure_channel(proc.address) as channel:
            events = [r.event for r in training_pb2_grpc.TrainingServiceStub(channel).TrainJob(spec, timeout=120)]
        assert events[-1].state == training_pb2.JOB_STATE_SUCCEEDED, events[-1].message
        proc.proc.terminate()
        assert proc.proc.wait(30) == 0
    records = [json.loads(line) for line in "".join(proc.log).splitlines() if line.strip()]  # raises on plain text
    warned = [r for r in records if r["logger"] == "py.warnings"]
    assert len(warned) == 1 and warned[0]["level"] == "WARNING", warned
    assert "UserWarning: reduction: 'mean' divides the total loss" in warned[0]["message"]


def test_calls_past_their_deadline_are_counted_and_logged_as_deadline_exceeded(tmp_path: Path) -> None:
    """An EvaluateLoss and an EvaluateLossStream that outlast their deadline (their evaluation waits at a gate):
    the client has DEADLINE_EXCEEDED, and so do ``grpc_server_handled_total``, ``lossd_evaluations_total`` and
    the access line (they said CANCELLED: gRPC cancels the handler either way; go-grpc-prometheus counts
    DEADLINE_EXCEEDED). A call its client cancels stays CANCELLED (tests/unit/test_observability.py)."""
    gate = LossGate(tmp_path)
    with ServedProcess.start(tmp_path, "--metrics-port", "0", "--log-format", "json", "--workers", "4",
                             env=gate.env) as proc:
        url = _metrics_url(proc)
        try:
            with grpc.insecure_channel(proc.address) as channel:
                loss = lossd_pb2_grpc.LossServiceStub(channel)
                with pytest.raises(grpc.RpcError) as unary:
                    loss.EvaluateLoss(gate.request(), metadata=_metadata("late-unary-1"), timeout=1.0)
                item = lossd_pb2.EvaluateLossStreamRequest(id="a", request=gate.request())
                with pytest.raises(grpc.RpcError) as stream:
                    list(loss.EvaluateLossStream(iter([item]), metadata=_metadata("late-stream-2"), timeout=1.0))
            assert unary.value.code() == stream.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            deadline = time.monotonic() + 10  # a call is recorded as its handler ends
            while True:
                s = _samples(urllib.request.urlopen(url, timeout=10).read().decode())
                both = [_value(s, "grpc_server_handled_total", **m, grpc_code="DEADLINE_EXCEEDED")
                        for m in (EVALUATE, STREAM)]
                if both == [1, 1] or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        finally:
            gate.open()
    assert both == [1, 1], (both, "".join(proc.log))
    for method in (EVALUATE, STREAM):
        assert _value(s, "grpc_server_handled_total", **method, grpc_code="CANCELLED") == 0
    assert _value(s, "lossd_evaluations_total", loss="gated_mse_loss", code="DEADLINE_EXCEEDED") == 1
    assert _value(s, "lossd_evaluations_total", loss="gated_mse_loss", code="CANCELLED") == 0
    records = [json.loads(line) for line in "".join(proc.log).splitlines() if line.strip()]
    access = {r["request_id"]: r for r in records if r.get("logger") == "lossd.access"}
    assert access["late-unary-1"]["status"] == "DEADLINE_EXCEEDED", access["late-unary-1"]
    assert access["late-stream-2"]["status"] == "DEADLINE_EXCEEDED", access["late-stream-2"]


def test_a_stream_cancelled_while_its_replies_wait_to_be_sent_is_counted_cancelled(tmp_path: Path) -> None:
    """A client that reads no replies, then cancels: gRPC gives up the stream's reply generator (it is blocked
    sending) and runs the call's done callback before closing it, so nothing had ended it yet: the call was
    counted and logged OK, a status its client never saw."""
    x = np.random.default_rng(0).standard_normal(10**6).astype(np.float32)
    tensor = lossd_pb2.Tensor(dtype="float32", shape=[x.size], raw=x.tobytes())
    cancelled_here = threading.Event()

    def items() -> Iterator[lossd_pb2.EvaluateLossStreamRequest]:
        for i in range(20):
            yield lossd_pb2.EvaluateLossStreamRequest(id=str(i), request=lossd_pb2.EvaluateLossRequest(
                loss="mse_loss", inputs={"input": tensor, "target": tensor}, grad_inputs=["input"]))
        cancelled_here.wait(30)  # then idle, the stream open, until the call is cancelled

    with ServedProcess.start(tmp_path, "--metrics-port", "0", "--log-format", "json") as proc:
        url = _metrics_url(proc)
        with grpc.insecure_channel(proc.address) as channel:
            call = lossd_pb2_grpc.LossServiceStub(channel).EvaluateLossStream(
                items(), metadata=_metadata("unread-stream-1"), timeout=60)
            time.sleep(3)  # the server answers what fits its flow-control window and blocks on the rest
            call.cancel()
            with pytest.raises(grpc.RpcError) as ended:
                list(call)
        cancelled_here.set()
        assert ended.value.code() == grpc.StatusCode.CANCELLED
        deadline = time.monotonic() + 10
        while True:
            s = _samples(urllib.request.urlopen(url, timeout=10).read().decode())
            cancelled = _value(s, "grpc_server_handled_total", **STREAM, grpc_code="CANCELLED")
            if cancelled == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert cancelled == 1 and _value(s, "grpc_server_handled_total", **STREAM, grpc_code="OK") == 0, \
        "".join(proc.log)
    records = [json.loads(line) for line in "".join(proc.log).splitlines() if line.strip()]
    access = {r["request_id"]: r for r in records if r.get("logger") == "lossd.access"}
    assert access["unread-stream-1"]["status"] == "CANCELLED", access["unread-stream-1"]
