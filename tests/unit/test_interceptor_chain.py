"""InterceptorChain: one interceptor for all of lossd's stages, each method's wrapped handler built
once; refusals keep the order the nested interceptors had (the real server's behaviour is covered by
test_security, test_concurrency_limits, test_observability and the drain and malformed tests)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import grpc

from lossd.server.interceptors import (
    BearerTokenInterceptor,
    ConcurrencyLimiter,
    DrainGate,
    InterceptorChain,
    MalformedRequests,
    build_interceptors,
)
from lossd.server.interceptors._chain import UNKNOWN_METHOD, StageInterceptor

EVALUATE = "/lossd.v1.LossService/EvaluateLoss"
HEALTH = "/grpc.health.v1.Health/Check"
TOKEN = b"0123456789abcdef"


async def _behavior(request: Any, context: Any) -> Any:
    return request


HANDLER = grpc.unary_unary_rpc_method_handler(_behavior, request_deserializer=bytes.decode)


def _details(method: str, token: bytes | None = TOKEN) -> Any:
    metadata = (("authorization", f"Bearer {token.decode()}"),) if token else ()
    return SimpleNamespace(method=method, invocation_metadata=metadata)


def _intercept(chain: InterceptorChain, details: Any, handler: Any = HANDLER) -> Any:
    async def continuation(_: Any) -> Any:
        return handler
    return asyncio.run(chain.intercept_service(continuation, details))


def test_the_server_installs_one_interceptor_whose_handlers_are_built_once_per_method() -> None:
    gate = DrainGate()
    [chain] = build_interceptors(gate, ConcurrencyLimiter(4, 2), token=TOKEN)
    assert isinstance(chain, InterceptorChain)
    first, second = _intercept(chain, _details(EVALUATE)), _intercept(chain, _details(EVALUATE))
    assert first is second and first is not HANDLER
    assert _intercept(chain, _details(HEALTH, token=None)) is _intercept(chain, _details(HEALTH, token=None))
    other = grpc.unary_unary_rpc_method_handler(_behavior)  # a new handler for the method: wrapped anew
    assert _intercept(chain, _details(EVALUATE), other) is not first


def test_refusals_are_decided_per_call_in_stage_order() -> None:
    gate, auth = DrainGate(), BearerTokenInterceptor(TOKEN)
    chain = InterceptorChain([gate, auth, ConcurrencyLimiter(4, 2), MalformedRequests()])
    ok = _intercept(chain, _details(EVALUATE))
    refused = _intercept(chain, _details(EVALUATE, token=b"wrong-token-0000"))
    assert refused is not ok and refused.request_deserializer is None  # parses nothing
    assert auth.refused == 1 and gate.refused == 0
    gate.close()
    _intercept(chain, _details(EVALUATE, token=b"wrong-token-0000"))
    assert gate.refused == 1 and auth.refused == 1  # the drain gate, outer, refuses first
    assert _intercept(chain, _details(HEALTH, token=None)) is not None  # health stays open while draining
    assert _intercept(chain, _details("/no.Such/Method"), None).request_deserializer is None


def test_a_refused_call_is_still_counted_by_the_stages_outside_the_refusing_one() -> None:
    gate, auth = DrainGate(), BearerTokenInterceptor(TOKEN)
    chain = InterceptorChain([gate, auth])
    handler = _intercept(chain, _details(EVALUATE, token=b"wrong-token-0000"))
    seen = []

    class Context:
        async def abort(self, code: grpc.StatusCode, message: str) -> None:
            seen.append((gate.in_flight, code))
            raise RuntimeError("aborted")

    async def nothing_sent() -> Any:  # a refusal reads nothing: request-streaming, whatever the method's kind
        raise AssertionError("the refusal read the request")
        yield  # pragma: no cover

    assert handler.unary_unary is None and handler.stream_unary is not None
    try:
        asyncio.run(handler.stream_unary(nothing_sent(), Context()))
    except RuntimeError:
        pass
    assert seen == [(1, grpc.StatusCode.UNAUTHENTICATED)] and gate.in_flight == 0


def test_a_plain_interceptor_among_the_stages_runs_per_call_around_the_stages_inside_it() -> None:
    seen: list[Any] = []

    class Plain(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            handler = await continuation(details)
            seen.append(handler)
            return handler

    gate = DrainGate()
    chain = InterceptorChain([Plain(), gate, MalformedRequests()])
    first, second = _intercept(chain, _details(EVALUATE)), _intercept(chain, _details(EVALUATE))
    assert first is second is seen[0] is seen[1]  # the stages inside it: built once
    assert first is not HANDLER and first.request_deserializer is not HANDLER.request_deserializer
    gate.close()
    refused = _intercept(chain, _details(EVALUATE))
    assert seen[-1] is refused and refused.request_deserializer is None  # the plain one sees the refusal
    assert _intercept(chain, _details("/no.Such/Method"), None) is not None and seen[-1] is not None


def test_evaluate_loss_served_client_streaming_is_wrapped_as_the_unary_call_it_is() -> None:
    """add_loss_service serves EvaluateLoss client-streaming (gRPC then keeps no reference to the received
    bytes): the stages wrap it as unary (the unary concurrency limit, no per-item generators), and gRPC gets
    back a client-streaming handler that reads exactly one message."""
    seen: list[Any] = []

    async def streamed(requests: Any, context: Any) -> Any:
        seen.extend([r async for r in requests])
        return "reply"

    limiter = ConcurrencyLimiter(4, 2)
    [chain] = build_interceptors(DrainGate(), limiter, token=TOKEN)
    handler = grpc.stream_unary_rpc_method_handler(streamed, request_deserializer=bytes.decode)
    wrapped = _intercept(chain, _details(EVALUATE), handler)
    assert wrapped.request_streaming and not wrapped.response_streaming
    assert _intercept(chain, _details(EVALUATE), handler) is wrapped  # built once per method

    def requests(*items: bytes) -> Any:
        """The call's request stream, as gRPC's context reads it (``context.read()``: the deserialized
        messages, then EOF); returns the stream the behavior is given, which must not be iterated."""
        pending = [wrapped.request_deserializer(item) for item in items]

        async def read() -> Any:
            return pending.pop(0) if pending else grpc.aio.EOF
        context.read = read
        return None

    context = SimpleNamespace(invocation_metadata=lambda: (), peer=lambda: "test", add_done_callback=lambda cb: None)

    in_flight = []

    async def counting(requests: Any, context: Any) -> Any:
        in_flight.append(limiter.rpcs.in_flight)
        return await streamed(requests, context)
    counted = _intercept(chain, _details(EVALUATE),
                         grpc.stream_unary_rpc_method_handler(counting, request_deserializer=bytes.decode))
    reply = asyncio.run(counted.stream_unary(requests(b"one"), context))
    assert reply == "reply" and seen == ["one"] and in_flight == [1]  # a unary slot, not a stream's

    class Aborted(Exception):
        pass

    async def abort(code: Any, details: str) -> None:
        raise Aborted(code, details)

    context.abort = abort
    try:
        asyncio.run(wrapped.stream_unary(requests(), context))
    except Aborted as e:
        assert e.args == (grpc.StatusCode.INVALID_ARGUMENT, "EvaluateLoss takes one request message; none came")
    else:
        raise AssertionError("not refused")
    # answered from the first message, as gRPC's unary handler answers: the second is never read
    seen.clear()
    assert asyncio.run(wrapped.stream_unary(requests(b"a", b"b"), context)) == "reply" and seen == ["a"]


def test_a_refused_call_to_a_method_not_served_is_wrapped_under_one_name() -> None:
    """The stages outside the refusing one see UNKNOWN_METHOD, not the client's made-up path (what they
    keep per method, such as metric labels, would grow with every path); served methods keep theirs."""
    seen: list[str] = []

    class Recorder(StageInterceptor):
        def wrap(self, handler: Any, method: str) -> Any:
            seen.append(method)
            return handler

    gate = DrainGate()
    chain = InterceptorChain([Recorder(), gate, BearerTokenInterceptor(TOKEN)])
    for k in range(3):
        assert _intercept(chain, _details(f"/made.up/M{k}", token=None), None) is not None
    _intercept(chain, _details(EVALUATE, token=None))
    gate.close()
    _intercept(chain, _details("/made.up/Drained"), None)
    assert seen == [UNKNOWN_METHOD] * 3 + [EVALUATE, UNKNOWN_METHOD]
