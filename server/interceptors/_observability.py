"""Per-RPC metrics and access logs: a grpc.aio server interceptor.

:func:`build_observability` makes it from the server settings: with
``metrics_port`` set it records the Prometheus metrics of :mod:`._metrics` and
serves them; with ``log_format="json"`` it logs one access line per RPC
(logger ``lossd.access``) with ``method``, ``loss``, ``status``,
``duration_ms``, ``request_id``, ``peer``, for jobs ``job_id``, and for a
call gRPC retried (a replica failed over, a refusal) ``attempt`` (2 and up,
from the ``grpc-previous-rpc-attempts`` header). With neither, no interceptor
is installed and calls pay nothing.

The request id is the client's ``x-request-id`` metadata when it is a short
token (letters, digits, ``.``, ``_``, ``-``; at most 64), else a fresh one.
Nothing else from the request is logged: no tensor contents, no parameters,
no other metadata, no token.

>>> request_id_from([("x-request-id", "job-42.a")]), len(request_id_from([("x-request-id", "bad id!")]))
('job-42.a', 16)
>>> attempt_from([("grpc-previous-rpc-attempts", "1")]), attempt_from([])
(2, 1)
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from ..._methods import BY_PATH, EVALUATE_LOSS, EVALUATE_LOSS_STREAM
from .._logging import access_fields
from .._metrics import Metrics
from ..losses import Registry
from ..rpc._caps import MAX_STRING_BYTES
from ._chain import StageInterceptor
from ._handlers import Context, Handler, shape_of

__all__ = ["Observability", "ObservabilityInterceptor", "attempt_from", "build_observability", "request_id_from"]

access_log = logging.getLogger("lossd.access")
log = logging.getLogger("lossd.server")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

#: Methods whose requests name a loss evaluation (counted in lossd_evaluations_total).
_EVALUATE = EVALUATE_LOSS.path
_EVALUATE_STREAM = EVALUATE_LOSS_STREAM.path


def request_id_from(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The client's ``x-request-id`` if it is a short plain token, else 16 random hex digits."""
    for key, value in metadata or ():
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return secrets.token_hex(8)


def attempt_from(metadata: Iterable[tuple[str, Any]] | None) -> int:
    """Which attempt of the client's call this is: 1 + gRPC's ``grpc-previous-rpc-attempts`` header."""
    for key, value in metadata or ():
        if key == "grpc-previous-rpc-attempts" and isinstance(value, str) and value.isdigit() and len(value) <= 2:
            return int(value) + 1
    return 1


def _code_name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for c in grpc.StatusCode:
            if c.value[0] == code:
                return c.name
    return "UNKNOWN"


@dataclass
class _Method:
    """What is fixed per method: names, labels and its metric children."""

    path: str
    service: str
    name: str
    kind: str  # unary, server_stream, client_stream, bidi_stream
    children: dict[str, Any] = field(default_factory=dict)
    #: By status code: the ``handled`` counter's and the latency histogram's children, made once.
    finished: dict[str, tuple[Any, Any]] = field(default_factory=dict)


@dataclass
class _Call:
    """One RPC in flight."""

    method: _Method
    start: float
    request_id: str = ""  # these three are read for the access log only
    peer: str = ""
    attempt: int = 1
    loss: str = ""
    job_id: str = ""
    #: The status an exception that ended the call stands for (:func:`_raised`), not the exception: its
    #: traceback holds this call's frames, and so this record, a cycle the collector frees late.
    raised: str | None = None
    #: A stream's reply generator: False while it runs, True once it ran to its end (None: not a stream).
    #: gRPC abandons the generator of a call it gives up (a client's cancel, the server's stop) and runs the
    #: done callback before closing it, so a call whose generator never ended was not answered OK.
    replied: bool | None = None
    items: int = 0
    pending: deque[str] = field(default_factory=deque)  # stream items' losses awaiting replies
    losses: dict[str, None] = field(default_factory=dict)  # every loss seen (streams), in order


class ObservabilityInterceptor(StageInterceptor):
    """Wraps every async handler: counts, times and logs each call."""

    def __init__(self, metrics: Metrics | None, access: bool, registry: Registry) -> None:
        self._metrics = metrics
        self._access = access
        self._registry = registry
        self._methods: dict[str, _Method] = {}
        self._evaluations: dict[tuple[str, str], Any] = {}  # lossd_evaluations_total's children by (loss, code)

    def wrap(self, handler: Handler, method: str) -> Handler:
        """``handler`` counted, timed and logged per call."""
        return self._wrap(handler, method)

    # -- per method ---------------------------------------------------------

    def _method(self, path: str, kind: str) -> _Method:
        """Labels from lossd's method table; health and reflection: from the path and handler."""
        m = self._methods.get(path)
        if m is None:
            entry = BY_PATH.get(path)
            if entry is not None:
                service, name, kind = entry.service, entry.name, entry.grpc_type
            else:
                service, _, name = path.lstrip("/").rpartition("/")
            m = _Method(path, service, name, kind)
            if self._metrics is not None:
                rpc = {"grpc_type": kind, "grpc_service": service, "grpc_method": name}
                io = {"grpc_service": service, "grpc_method": name}
                mt = self._metrics
                m.children = {
                    "started": mt.started.labels(**rpc), "msg_in": mt.msg_received.labels(**rpc),
                    "msg_out": mt.msg_sent.labels(**rpc), "bytes_in": mt.bytes_received.labels(**io),
                    "bytes_out": mt.bytes_sent.labels(**io), "rpc": rpc,
                }
            self._methods[path] = m
        return m

    def _wrap(self, handler: Handler, path: str) -> Handler:
        shape = shape_of(handler)
        if shape is None:
            return handler  # a synchronous handler (none in lossd): left as it is
        method = self._method(path, shape.kind)
        new = self._behavior(method, shape.behavior, shape.is_gen, streaming_in=shape.streaming_in)
        return shape.rebuild(
            new,
            request_deserializer=self._counting(method, handler.request_deserializer, "in"),
            response_serializer=self._counting(method, handler.response_serializer, "out"),
        )

    def _counting(self, method: _Method, fn: Callable[[Any], Any] | None, way: str) -> Callable[[Any], Any] | None:
        """The (de)serializer, counting messages and bytes on the way."""
        if self._metrics is None:
            return fn
        msgs, size = method.children[f"msg_{way}"], method.children[f"bytes_{way}"]
        if way == "in":
            def deserialize(data: bytes) -> Any:
                msgs.inc()
                size.inc(len(data))
                return fn(data) if fn is not None else data
            return deserialize

        def serialize(message: Any) -> bytes:
            data: bytes = fn(message) if fn is not None else message
            msgs.inc()
            size.inc(len(data))
            return data
        return serialize

    # -- per call -----------------------------------------------------------

    def _behavior(self, method: _Method, behavior: Any, is_gen: bool, streaming_in: bool) -> Any:
        begin, observe = self._begin, self._observe_request

        def prepare(request: Any, context: Context) -> tuple[_Call, Any]:
            call = begin(method, context)
            if streaming_in:
                return call, self._observed_iterator(call, request)
            observe(call, request)
            return call, request

        if is_gen:
            async def gen_behavior(request: Any, context: Context) -> AsyncIterator[Any]:
                call, request = prepare(request, context)
                call.replied = False
                agen = behavior(request, context)
                try:
                    async for reply in agen:
                        self._observe_reply(call, reply)
                        yield reply
                    call.replied = True
                except BaseException as e:
                    call.raised = _raised(e)
                    raise
                finally:
                    await agen.aclose()
            return gen_behavior

        async def coro_behavior(request: Any, context: Context) -> Any:
            call, request = prepare(request, context)
            try:
                return await behavior(request, context)
            except BaseException as e:
                call.raised = _raised(e)
                raise
        return coro_behavior

    def _begin(self, method: _Method, context: Context) -> _Call:
        if self._access:
            metadata = context.invocation_metadata()
            call = _Call(method, time.perf_counter(), request_id_from(metadata), context.peer(), attempt_from(metadata))
        else:  # metrics alone: nothing of the call's identity is needed
            call = _Call(method, time.perf_counter())
        if self._metrics is not None:
            method.children["started"].inc()
        # grpc's stubs type the callback as a class, not a Protocol: no function matches it.
        context.add_done_callback(lambda ctx: self._finish(call, ctx))  # type: ignore[arg-type]
        return call

    async def _observed_iterator(self, call: _Call, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for item in requests:
            self._observe_request(call, item)
            yield item

    def _loss_label(self, request: Any) -> str:
        """Canonical loss name of an EvaluateLossRequest: bounded label values only. A name the registry
        cannot resolve (unknown, or one it refuses as ambiguous between libraries, such as ``focal``) is
        ``unknown``: looked up with ``Registry.find``, which never raises."""
        if not hasattr(request, "loss"):
            return ""  # not a loss request (ListLosses, health, jobs by id)
        if getattr(request, "terms", None):
            return "objective"
        name = getattr(request, "loss", "")
        if isinstance(name, str):  # a stream item's, not checked yet, may be over the caps: not looked up
            spec = self._registry.find(name) if len(name) <= MAX_STRING_BYTES else None
            return spec.name if spec is not None else "unknown"
        name = getattr(name, "name", "")  # e.g. TrainJobRequest.loss is a message with a name
        spec = self._registry.find(name) if isinstance(name, str) and len(name) <= MAX_STRING_BYTES else None
        return spec.name if spec is not None else ""

    def _observe_request(self, call: _Call, request: Any) -> None:
        call.items += 1
        try:
            self._read_request(call, request)
        except Exception:  # observing must never break a call
            log.debug("could not read %s request for metrics", call.method.name, exc_info=True)

    def _read_request(self, call: _Call, request: Any) -> None:
        if call.method.path == _EVALUATE_STREAM:
            # Every item gets one reply, in order: an item whose label could not be read still takes its
            # place in ``pending``, or each later reply would be counted under the item before it.
            inner = getattr(request, "request", None)  # EvaluateLossStreamRequest wraps the evaluation
            try:
                loss = self._loss_label(inner if inner is not None else request)
            except Exception:
                log.debug("could not read the loss of an EvaluateLossStream item", exc_info=True)
                loss = "unknown"
            call.pending.append(loss)
            call.losses[loss] = None
        else:
            call.loss = self._loss_label(request)
        job_id = getattr(request, "job_id", "")
        if isinstance(job_id, str) and job_id:
            call.job_id = job_id

    def _observe_reply(self, call: _Call, reply: Any) -> None:
        try:
            self._read_reply(call, reply)
        except Exception:  # observing must never break a call
            log.debug("could not read %s reply for metrics", call.method.name, exc_info=True)

    def _read_reply(self, call: _Call, reply: Any) -> None:
        if call.method.path == _EVALUATE_STREAM and call.pending:
            loss = call.pending.popleft()
            error = reply.error.code if not isinstance(reply, bytes) and reply.HasField("error") else ""
            if self._metrics is not None:
                self._evaluation(loss, error or "OK").inc()
        elif not call.job_id:
            event = getattr(reply, "event", None)  # TrainJobResponse: the job id arrives with the first event
            job_id = getattr(event, "job_id", "") if event is not None else ""
            if isinstance(job_id, str) and job_id:
                call.job_id = job_id

    def _evaluation(self, loss: str, code: str) -> Any:
        """``lossd_evaluations_total``'s child for ``loss`` and ``code``, made once (both bounded: canonical
        names, ``objective``, ``unknown``; status code names)."""
        child = self._evaluations.get((loss, code))
        if child is None:
            assert self._metrics is not None
            child = self._evaluations[(loss, code)] = self._metrics.evaluations.labels(loss=loss, code=code)
        return child

    def _finish(self, call: _Call, context: Any) -> None:
        try:
            self._record(call, context)
        except Exception:  # observing must never break a call
            log.debug("could not record %s", call.method.name, exc_info=True)

    def _record(self, call: _Call, context: Any) -> None:
        code = _status(context, "CANCELLED" if call.raised is None and call.replied is False else call.raised)
        elapsed = time.perf_counter() - call.start
        method = call.method
        if self._metrics is not None:
            finished = method.finished.get(code)
            if finished is None:
                rpc = method.children["rpc"]
                finished = method.finished[code] = (self._metrics.handled.labels(**rpc, grpc_code=code),
                                                    self._metrics.latency.labels(**rpc, grpc_code=code))
            finished[0].inc()
            finished[1].observe(elapsed)
            if method.path == _EVALUATE and call.loss:
                self._evaluation(call.loss, code).inc()
        if self._access:
            loss = call.loss or ",".join(call.losses)
            fields: dict[str, Any] = {
                "method": method.name, "service": method.service, "status": code,
                "duration_ms": round(elapsed * 1000, 3), "request_id": call.request_id, "peer": call.peer,
            }
            if loss:
                fields["loss"] = loss
            if method.kind in ("client_stream", "bidi_stream"):
                fields["items"] = call.items
            if call.job_id:
                fields["job_id"] = call.job_id
            if call.attempt > 1:
                fields["attempt"] = call.attempt
            access_log.info("%s %s", method.name, code, extra=access_fields(**fields))


def _raised(error: BaseException) -> str | None:
    """The status a call ended by ``error`` has when gRPC has set none: ``None`` for a stream closed early
    (which :attr:`_Call.replied` tells)."""
    if isinstance(error, GeneratorExit):
        return None
    return "CANCELLED" if isinstance(error, asyncio.CancelledError) else "UNKNOWN"


def _status(context: Any, raised: str | None) -> str:
    """The call's final status code name (``raised``: :func:`_raised` of what ended it, if anything did).
    A call cancelled once its deadline had passed is ``DEADLINE_EXCEEDED``, as its client sees it (and as
    go-grpc-prometheus counts it); gRPC cancels the handler either way."""
    code = context.code()
    if code is not None:
        return _code_name(code)
    if raised is not None and raised != "CANCELLED":
        return raised
    if raised is None and not context.cancelled():
        return "OK"
    # cancelled (its handler was: context.cancelled() is still False when this runs)
    return "DEADLINE_EXCEEDED" if _past_deadline(context) else "CANCELLED"


#: A call cancelled with at most this long left of its deadline was cancelled by it: the client cancels the call
#: (RST_STREAM) when its own copy of the deadline passes, which may reach the server a few milliseconds before
#: the server's copy (measured: 1 call in 20 on one machine, 2 ms early).
DEADLINE_SLACK_S = 0.1


def _past_deadline(context: Any) -> bool:
    """Whether the call had a deadline and it has passed, give or take :data:`DEADLINE_SLACK_S`
    (``time_remaining()``: ``None`` without one)."""
    left = context.time_remaining()
    return left is not None and left <= DEADLINE_SLACK_S


class Observability:
    """The interceptor and the metrics endpoint of one server."""

    def __init__(self, metrics: Metrics | None, access: bool, registry: Registry, metrics_port: int | None) -> None:
        self.metrics = metrics
        self.interceptor = ObservabilityInterceptor(metrics, access, registry)
        self._metrics_port = metrics_port

    def start(self, host: str) -> None:
        """Serve ``/metrics`` on ``host`` and the configured port (0: ephemeral), if metrics are on."""
        if self.metrics is not None and self._metrics_port is not None and self.metrics.port is None:
            self.metrics.serve(host, self._metrics_port)

    @property
    def metrics_port(self) -> int | None:
        """Where ``/metrics`` is served (None: off)."""
        return self.metrics.port if self.metrics is not None else None

    def close(self) -> None:
        """Stop serving metrics."""
        if self.metrics is not None:
            self.metrics.close()


def build_observability(registry: Registry, *, metrics_port: int | None, log_format: str) -> Observability | None:
    """The observability of a server, or None when neither metrics nor JSON logs are asked for.

    Metrics are collected from the start; :meth:`Observability.start` serves them.
    Raises ``SettingError`` (naming ``--metrics-port`` and the pip command) when metrics are
    asked for without prometheus-client installed.
    """
    access = log_format == "json"
    if metrics_port is None and not access:
        return None
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise ValueError(f"metrics_port: {metrics_port} is not a TCP port (0..65535; 0 picks a free one)")
    metrics = Metrics() if metrics_port is not None else None
    return Observability(metrics, access, registry, metrics_port)
