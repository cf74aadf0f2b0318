"""The observability pieces on their own: JSON log lines, request ids, job hooks,
and the interceptor's status codes on a small grpc.aio server of its own
(an uncaught exception, an abort, a cancelled call, a streaming handler)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from typing import Any

import grpc
import pytest

from lossd._settings import SettingError
from lossd.server import _logging, _metrics
from lossd.server._logging import JsonFormatter, access_fields, configure_logging, emit
from lossd.server._metrics import Metrics, add_job_steps, set_jobs_by_state
from lossd.server.interceptors._observability import ObservabilityInterceptor, build_observability, request_id_from
from lossd.server.losses import REGISTRY
from lossd.v1 import training_pb2


def test_json_formatter_one_line_with_fields_and_exception() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord("lossd.x", logging.ERROR, __file__, 1, "failed: %s", ("ü",), sys.exc_info())
    record.lossd_fields = {"method": "EvaluateLoss", "duration_ms": 1.5}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "failed: ü" and out["level"] == "ERROR" and out["logger"] == "lossd.x"
    assert out["method"] == "EvaluateLoss" and out["duration_ms"] == 1.5
    assert "ValueError: boom" in out["exception"]
    assert out["time"].endswith("+00:00")


def test_plain_format_appends_fields() -> None:
    stream = io.StringIO()
    logger = configure_logging("INFO", "plain", stream=stream, logger=logging.getLogger("lossd.test.plain"))
    logger.info("EvaluateLoss OK", extra=access_fields(status="OK", loss="", request_id="r1"))
    assert stream.getvalue().rstrip().endswith("EvaluateLoss OK status=OK request_id=r1")
    with pytest.raises(ValueError, match="plain, json"):
        configure_logging("INFO", "yaml", logger=logging.getLogger("lossd.test.plain"))



class _Writes(io.RawIOBase):
    """A raw stream that keeps each ``write``: the write(2) calls the process would make."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.writes.append(bytes(data))
        return len(data)


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_a_lifecycle_line_goes_out_in_one_write(monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    """Under PYTHONUNBUFFERED stdout is a write-through text layer on the raw file (as here): a line written in two
    parts let another thread's log line (stderr, the same pipe) in between, and a reader took ``:40397`` followed by
    ``2026-12-04 …`` for port 403972026 (the kill -9 restart test: connection refused)."""
    raw = _Writes()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="utf-8", write_through=True))
    monkeypatch.setattr(_logging, "_current_format", fmt)
    emit("lossd 0.1.0 listening on 127.0.0.1:40397")
    sys.stdout.flush()
    assert len(raw.writes) == 1 and raw.writes[0].endswith(b"\n") and raw.writes[0].count(b"\n") == 1, raw.writes
    line = raw.writes[0].decode()
    assert (json.loads(line)["message"] if fmt == "json" else line.rstrip("\n")) == \
        "lossd 0.1.0 listening on 127.0.0.1:40397"

def test_the_serve_error_line_goes_out_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """``lossd serve: error: …`` (exit 2) is one write too: tools read it from the same pipe as the logs."""
    from lossd.server import main

    raw = _Writes()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(raw, encoding="utf-8", write_through=True))
    monkeypatch.setenv("LOSSD_METRICS_PORT", "not-a-port")
    assert main([]) == 2
    sys.stderr.flush()
    assert len(raw.writes) == 1 and raw.writes[0].count(b"\n") == 1, raw.writes
    assert raw.writes[0].startswith(b"lossd serve: error: ") and b"LOSSD_METRICS_PORT" in raw.writes[0]


@pytest.mark.parametrize(("metadata", "expected"), [
    ([("x-request-id", "abc-123_X.y")], "abc-123_X.y"),
    ([("other", "v"), ("x-request-id", "a" * 64)], "a" * 64),
])
def test_request_id_from_client(metadata: list[tuple[str, str]], expected: str) -> None:
    assert request_id_from(metadata) == expected


@pytest.mark.parametrize("value", ["a" * 65, "has space", "new\nline", "", "é"])
def test_request_id_generated_when_unusable(value: str) -> None:
    rid = request_id_from([("x-request-id", value)])
    assert rid != value and len(rid) == 16 and int(rid, 16) >= 0


def test_off_by_default_builds_nothing() -> None:
    assert build_observability(REGISTRY, metrics_port=None, log_format="plain") is None
    with pytest.raises(ValueError, match="metrics_port"):
        build_observability(REGISTRY, metrics_port=70000, log_format="plain")


def test_metrics_without_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(SettingError, match=r"--metrics-port .*: pip install prometheus-client \(or pip install "
                       r"'\.\[metrics\]' in the lossd clone\)$"):
        Metrics()


def test_job_hooks_reach_live_metrics_only() -> None:
    add_job_steps(5)  # no server with metrics yet: a no-op, no error
    m = Metrics()
    try:
        set_jobs_by_state({"RUNNING": 2, training_pb2.JOB_STATE_QUEUED: 1, "JOB_STATE_FAILED": 3})
        add_job_steps(7)
        add_job_steps(0)
        text = m.exposition()
        assert 'lossd_jobs{state="RUNNING"} 2.0' in text
        assert 'lossd_jobs{state="QUEUED"} 1.0' in text
        assert 'lossd_jobs{state="FAILED"} 3.0' in text
        assert 'lossd_jobs{state="SUCCEEDED"} 0.0' in text
        assert "lossd_job_steps_total 7.0" in text
        set_jobs_by_state({"SUCCEEDED": 1})  # states left out drop to 0
        text = m.exposition()
        assert 'lossd_jobs{state="RUNNING"} 0.0' in text and 'lossd_jobs{state="SUCCEEDED"} 1.0' in text
    finally:
        m.close()
    add_job_steps(3)
    assert "lossd_job_steps_total 7.0" in m.exposition()


def test_metrics_endpoint_serves_and_closes() -> None:
    import urllib.request

    m = Metrics()
    port = m.serve("127.0.0.1", 0)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert "lossd_build_info" in body
    finally:
        m.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_metrics_port_in_use_names_the_flag() -> None:
    first = Metrics()
    port = first.serve("127.0.0.1", 0)
    second = Metrics()
    try:
        with pytest.raises(OSError, match=rf"127.0.0.1:{port} \(--metrics-port\)"):
            second.serve("127.0.0.1", port)
    finally:
        first.close()
        second.close()


# --- the interceptor on a server of its own -----------------------------------

def _identity(b: bytes) -> bytes:
    return b


async def _raise(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("a bug")


async def _abort(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad")
    raise AssertionError("unreachable")


async def _slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(10)
    return request


async def _echo_stream(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
    for _ in range(3):
        yield request


async def _served_statuses() -> tuple[str, dict[str, grpc.StatusCode]]:
    metrics = Metrics()
    server = grpc.aio.server(interceptors=[ObservabilityInterceptor(metrics, True, REGISTRY)])
    handlers = {
        "Raise": grpc.unary_unary_rpc_method_handler(_raise, _identity, _identity),
        "Abort": grpc.unary_unary_rpc_method_handler(_abort, _identity, _identity),
        "Slow": grpc.unary_unary_rpc_method_handler(_slow, _identity, _identity),
        "Late": grpc.unary_unary_rpc_method_handler(_slow, _identity, _identity),
        "Echo": grpc.unary_stream_rpc_method_handler(_echo_stream, _identity, _identity),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.T", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    codes: dict[str, grpc.StatusCode] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for name in ("Raise", "Abort"):
                try:
                    await channel.unary_unary(f"/test.T/{name}")(b"x", timeout=10)
                except grpc.aio.AioRpcError as e:
                    codes[name] = e.code()
            call = channel.unary_unary("/test.T/Slow")(b"x", timeout=10)
            await asyncio.sleep(0.2)
            call.cancel()
            try:  # past its deadline: the client has DEADLINE_EXCEEDED, and so must the metrics
                await channel.unary_unary("/test.T/Late")(b"x", timeout=0.3)
            except grpc.aio.AioRpcError as e:
                codes["Late"] = e.code()
            replies = [r async for r in channel.unary_stream("/test.T/Echo")(b"abc", timeout=10)]
            assert replies == [b"abc"] * 3
        await asyncio.sleep(0.3)  # done callbacks
    finally:
        await server.stop(None)
        metrics.close()
    return metrics.exposition(), codes


def test_interceptor_status_codes() -> None:
    text, codes = asyncio.run(_served_statuses())
    assert codes == {"Raise": grpc.StatusCode.UNKNOWN, "Abort": grpc.StatusCode.INVALID_ARGUMENT,
                     "Late": grpc.StatusCode.DEADLINE_EXCEEDED}

    def handled(method: str, kind: str, code: str) -> str:
        return (f'grpc_server_handled_total{{grpc_code="{code}",grpc_method="{method}",'
                f'grpc_service="test.T",grpc_type="{kind}"}} 1.0')

    assert handled("Raise", "unary", "UNKNOWN") in text
    assert handled("Abort", "unary", "INVALID_ARGUMENT") in text
    assert handled("Slow", "unary", "CANCELLED") in text  # cancelled by its client
    assert handled("Late", "unary", "DEADLINE_EXCEEDED") in text  # was CANCELLED
    assert handled("Echo", "server_stream", "OK") in text
    assert ('grpc_server_msg_sent_total{grpc_method="Echo",grpc_service="test.T",'
            'grpc_type="server_stream"} 3.0') in text
    assert 'lossd_rpc_sent_bytes_total{grpc_method="Echo",grpc_service="test.T"} 9.0' in text


def test_metrics_module_all() -> None:
    assert set(_metrics.__all__) >= {"Metrics", "set_jobs_by_state", "add_job_steps"}


def test_the_batchers_counters_are_read_when_scraped() -> None:
    from types import SimpleNamespace

    from lossd.server._metrics import Metrics

    batcher = SimpleNamespace(alone=3, calls=10, groups=4)
    m = Metrics()
    try:
        m.watch_batcher(batcher)
        batcher.alone, batcher.calls, batcher.groups = 5, 16, 6  # read at the scrape, not at registration
        text = m.exposition()
    finally:
        m.close()
    assert 'lossd_batch_window_calls_total{way="at_once"} 5.0' in text
    assert 'lossd_batch_window_calls_total{way="waited"} 16.0' in text
    assert "lossd_batch_window_groups_total 6.0" in text


def test_a_loss_name_over_the_caps_is_labelled_unknown_without_a_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """An EvaluateLossStream item reaches the interceptor before its caps are checked: a loss name over
    them (100 MB took 0.2 s in the registry's lookup, on the event loop) is labelled "unknown" unread."""
    from lossd.server.rpc._caps import MAX_STRING_BYTES
    from lossd.v1 import lossd_pb2

    interceptor = ObservabilityInterceptor(Metrics(), False, REGISTRY)
    looked_up: list[str] = []
    find = type(REGISTRY).find
    monkeypatch.setattr(type(REGISTRY), "find", lambda self, name: looked_up.append(name) or find(self, name))
    long_name = "mse_loss" + " " * MAX_STRING_BYTES
    assert interceptor._loss_label(lossd_pb2.EvaluateLossRequest(loss=long_name)) == "unknown"
    assert looked_up == []
    assert interceptor._loss_label(lossd_pb2.EvaluateLossRequest(loss="mse_loss" + " " * 100)) == "mse_loss"
    assert len(looked_up) == 1


#: Names the registry knows but refuses: each means different losses or defaults in different libraries.
AMBIGUOUS = ["focal", "FocalLoss", "SSIMLoss"]


@pytest.mark.parametrize("name", AMBIGUOUS)
def test_an_ambiguous_loss_name_is_labelled_unknown(name: str) -> None:
    """``name in registry`` is true for such a name and ``registry.get`` raises: the label was lost (the
    exception swallowed), so the call was not counted and its access line had no loss."""
    from lossd.v1 import lossd_pb2, training_pb2

    assert name in REGISTRY and REGISTRY.find(name) is None  # what makes the name a trap
    interceptor = ObservabilityInterceptor(Metrics(), False, REGISTRY)
    assert interceptor._loss_label(lossd_pb2.EvaluateLossRequest(loss=name)) == "unknown"
    assert interceptor._loss_label(lossd_pb2.EvaluateLossRequest(loss="MSELoss")) == "mse_loss"
    job = training_pb2.TrainJobRequest(loss=training_pb2.TrainingLoss(name=name))
    assert interceptor._loss_label(job) == ""  # a job's loss: no label rather than an error


def test_stream_replies_are_counted_under_their_own_items_loss() -> None:
    """Each EvaluateLossStream reply is counted under its item's loss, in order, even after an item whose
    name is ambiguous (its label was never queued, so every later reply took the label of the item after
    it, and the last reply went uncounted)."""
    from lossd._methods import EVALUATE_LOSS, EVALUATE_LOSS_STREAM
    from lossd.server.interceptors._observability import _Call, _Method
    from lossd.v1 import lossd_pb2

    metrics = Metrics()
    interceptor = ObservabilityInterceptor(metrics, True, REGISTRY)
    stream = _Call(_Method(EVALUATE_LOSS_STREAM.path, "lossd.v1.LossService", "EvaluateLossStream", "bidi_stream"),
                   0.0)
    names = ["mse", "focal", "l1", "SSIMLoss", "no_such_loss", "MSELoss"]
    for k, name in enumerate(names):
        interceptor._observe_request(stream, lossd_pb2.EvaluateLossStreamRequest(
            id=str(k), request=lossd_pb2.EvaluateLossRequest(loss=name)))
    assert list(stream.pending) == ["mse_loss", "unknown", "l1_loss", "unknown", "unknown", "mse_loss"]
    assert list(stream.losses) == ["mse_loss", "unknown", "l1_loss"]  # the access line's loss field
    for k, name in enumerate(names):
        failed = REGISTRY.find(name) is None
        error = lossd_pb2.Error(code="NOT_FOUND") if failed else None
        interceptor._observe_reply(stream, lossd_pb2.EvaluateLossStreamResponse(id=str(k), error=error))
    unary = _Call(_Method(EVALUATE_LOSS.path, "lossd.v1.LossService", "EvaluateLoss", "unary"), 0.0)
    interceptor._observe_request(unary, lossd_pb2.EvaluateLossRequest(loss="FocalLoss"))
    assert unary.loss == "unknown"
    text = metrics.exposition()
    metrics.close()
    assert 'lossd_evaluations_total{code="OK",loss="mse_loss"} 2.0' in text
    assert 'lossd_evaluations_total{code="OK",loss="l1_loss"} 1.0' in text
    assert 'lossd_evaluations_total{code="NOT_FOUND",loss="unknown"} 3.0' in text
    assert 'code="NOT_FOUND",loss="l1_loss"' not in text and 'code="OK",loss="unknown"' not in text


def test_a_call_cancelled_at_its_deadline_is_deadline_exceeded() -> None:
    """A handler cancelled once its deadline has passed (or within ``DEADLINE_SLACK_S`` of it: the client's
    cancel, sent as its own copy of the deadline passes, can arrive just before the server's) ended with
    DEADLINE_EXCEEDED, as the client sees it; cancelled earlier, or without a deadline, it is CANCELLED."""
    from types import SimpleNamespace

    from lossd.server.interceptors._observability import DEADLINE_SLACK_S, _status

    def context(left: float | None, cancelled: bool = False) -> Any:
        return SimpleNamespace(code=lambda: None, cancelled=lambda: cancelled, time_remaining=lambda: left)

    assert _status(context(0.0), "CANCELLED") == "DEADLINE_EXCEEDED"
    assert _status(context(DEADLINE_SLACK_S / 20), "CANCELLED") == "DEADLINE_EXCEEDED"
    assert _status(context(0.0, cancelled=True), None) == "DEADLINE_EXCEEDED"
    assert _status(context(5.0), "CANCELLED") == "CANCELLED"
    assert _status(context(None), "CANCELLED") == "CANCELLED"
    assert _status(context(None, cancelled=True), None) == "CANCELLED"
    assert _status(context(0.0), "UNKNOWN") == "UNKNOWN"  # a handler that raised is what it was
    assert _status(context(0.0), None) == "OK"
