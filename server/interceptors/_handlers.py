"""The one place that knows a grpc.aio method handler's four shapes.

Every lossd server interceptor (observability, the drain gate, bearer-token
auth, concurrency limits, malformed requests) does the same thing: take the
handler gRPC found for a call, and return one whose behavior does something
around the original. :func:`shape_of` says which of the four kinds a handler
is and holds its behavior; :meth:`Shape.rebuild` makes the new handler of the
same kind. :func:`refusing_handler` ends a call without parsing its request,
:func:`ending_cleanly` keeps an aborted call from outliving itself, and
:func:`is_open` says whether a method is one of those callable without
credentials and never limited or refused (the standard health service).

>>> import grpc
>>> async def echo(request, context):
...     return request
>>> shape = shape_of(grpc.unary_unary_rpc_method_handler(echo))
>>> shape.kind, shape.is_gen, shape.streaming_in
('unary', False, False)
>>> is_open("/grpc.health.v1.Health/Check"), is_open("/lossd.v1.LossService/EvaluateLoss")
(True, False)
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from grpc_reflection.v1alpha.reflection import SERVICE_NAME as REFLECTION_SERVICE

from ..._methods import BY_PATH, HEALTH_CHECK
from ..rpc._service import OneRequest, only_request

__all__ = [
    "OPEN_PREFIXES", "UNDRAINED_PREFIXES", "Context", "Continuation", "Handler", "Shape", "as_unary",
    "ending_cleanly", "is_open", "read_to_end", "refusing_handler", "shape_of", "streams_requests",
]

#: A method handler, a call's context and an interceptor's ``continuation``, as the interceptors
#: see them: grpc's stubs are generic over request and reply types, which vary by method.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"

#: Methods callable without credentials, never limited and never refused while draining:
#: the standard health service, for probes and load balancers.
OPEN_PREFIXES = (f"/{HEALTH_CHECK.service}/",)

#: Methods a drain neither waits for nor refuses: the open ones, and server reflection, whose stream a
#: client such as grpcurl holds open, idle, between its questions (waiting for it would hold every
#: shutdown for its whole grace period). Reflection still needs the token and takes a stream slot.
UNDRAINED_PREFIXES = (*OPEN_PREFIXES, f"/{REFLECTION_SERVICE}/")

#: (kind, handler attribute, factory), in the order gRPC's handlers are checked.
_KINDS = (
    ("unary", "unary_unary", grpc.unary_unary_rpc_method_handler),
    ("server_stream", "unary_stream", grpc.unary_stream_rpc_method_handler),
    ("client_stream", "stream_unary", grpc.stream_unary_rpc_method_handler),
    ("bidi_stream", "stream_stream", grpc.stream_stream_rpc_method_handler),
)

_SAME: Any = object()


def is_open(method: object, prefixes: tuple[str, ...] = OPEN_PREFIXES) -> bool:
    """Whether ``method`` (a call's full method name) is one of the open ones."""
    return isinstance(method, str) and method.startswith(prefixes)


@dataclass(frozen=True)
class Shape:
    """A handler's kind, its behavior and how to make another handler of that kind."""

    kind: str  # unary, server_stream, client_stream or bidi_stream
    behavior: Callable[..., Any]
    handler: Handler
    factory: Callable[..., Handler]

    @property
    def is_gen(self) -> bool:
        """Whether the behavior is an async generator (it streams its replies)."""
        return inspect.isasyncgenfunction(self.behavior)

    @property
    def streaming_in(self) -> bool:
        """Whether the call streams its requests."""
        return bool(self.handler.request_streaming)

    def rebuild(self, behavior: Callable[..., Any], *, request_deserializer: Any = _SAME,
                response_serializer: Any = _SAME) -> Handler:
        """A handler of this kind running ``behavior``; the (de)serializers stay unless given."""
        return self.factory(
            behavior,
            request_deserializer=(self.handler.request_deserializer if request_deserializer is _SAME
                                  else request_deserializer),
            response_serializer=(self.handler.response_serializer if response_serializer is _SAME
                                 else response_serializer),
        )


def shape_of(handler: Handler) -> Shape | None:
    """``handler``'s shape; ``None`` when its behavior is synchronous (none in lossd), which the
    interceptors then leave as it is."""
    for kind, attr, factory in _KINDS:
        behavior = getattr(handler, attr)
        if behavior is not None:
            if not (inspect.isasyncgenfunction(behavior) or inspect.iscoroutinefunction(behavior)):
                return None
            return Shape(kind, behavior, handler, factory)
    return None  # pragma: no cover - a handler always has one behavior


def streams_requests(handler: Handler, method: str) -> bool:
    """Whether ``method``'s calls stream their requests by the contract (lossd's ``.proto``), whatever the
    handler's shape: EvaluateLoss is unary although ``add_loss_service`` registers it client-streaming (to
    read its one message without gRPC keeping the bytes); other methods, by their handler.

    >>> streams_requests(grpc.stream_unary_rpc_method_handler(None), "/lossd.v1.LossService/EvaluateLoss")
    False
    """
    rpc = BY_PATH.get(method)
    return rpc.kind.startswith("stream_") if rpc is not None else bool(handler.request_streaming)


def read_to_end(handler: Handler, method: str) -> bool:
    """Whether ``handler`` serves a unary method (by the contract) as client-streaming, to read its one
    message to the end of the stream (``add_loss_service``'s EvaluateLoss): the interceptors then wrap it
    as the unary handler it stands for (:func:`as_unary`), and the chain turns the result back."""
    return (bool(handler.request_streaming) and not handler.response_streaming
            and handler.request_deserializer is not None and not streams_requests(handler, method))


def as_unary(handler: Handler, wrap: Callable[[Handler], Handler]) -> Handler:
    """``handler`` (one that :func:`read_to_end`) as a unary handler, wrapped by ``wrap`` (the interceptors),
    and turned back into a client-streaming one that reads the one message (``only_request``) first."""
    streamed: Any = handler.stream_unary

    async def unary(request: Any, context: Context) -> Any:
        return await streamed(OneRequest(request), context)

    wrapped = wrap(grpc.unary_unary_rpc_method_handler(
        unary, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer))
    inner: Any = wrapped.unary_unary

    async def reading(requests: AsyncIterator[Any], context: Context) -> Any:
        return await inner(await only_request(requests, context), context)

    return grpc.stream_unary_rpc_method_handler(
        reading, request_deserializer=wrapped.request_deserializer, response_serializer=wrapped.response_serializer)


def refusing_handler(handler: Handler | None, code: grpc.StatusCode,
                     message: str) -> Handler:
    """A handler that ends every call with ``code`` and ``message`` without reading or parsing its request:
    of ``handler``'s response kind (streaming when unknown), and always request-streaming, which the wire
    does not show. A unary handler gets its request once the whole message has arrived, so a refusal of
    that kind waited for it: a caller without the token held up to ``--max-message-bytes`` per stream of
    the server's memory (4 streams of 40 MB: +153 MB) until it sent the rest, or forever."""

    async def refuse(requests: Any, context: Context) -> Any:
        await context.abort(code, message)

    async def refuse_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    if handler is None or handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream)
    return grpc.stream_unary_rpc_method_handler(refuse)


def ending_cleanly(handler: Handler) -> Handler:
    """``handler`` whose aborted calls are freed as soon as they end.

    ``context.abort`` raises an ``AbortError`` that gRPC also keeps on the call's state, and the error's
    traceback holds every frame it went through (each with its request, its decoded tensors, and through
    ``__context__`` the error the abort answered): a reference cycle. Only a full garbage collection frees
    it, which a busy server runs rarely: 80 refused requests of 80 MB each held 2 GB. Here the error is
    stripped of its traceback and context and not raised further: gRPC, having sent the status already,
    raises it again itself from its own frames, which hold nothing of the call (docs/security.md).

    >>> async def refused(request, context):
    ...     await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no")
    >>> shape_of(ending_cleanly(grpc.unary_unary_rpc_method_handler(refused))).kind
    'unary'
    """
    shape = shape_of(handler)
    if shape is None:
        return handler
    behavior = shape.behavior
    if shape.is_gen:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            replies = behavior(request, context)
            try:
                async for reply in replies:
                    yield reply
            except grpc.aio.AbortError as e:
                _forget_frames(e)
            finally:
                await replies.aclose()
        return shape.rebuild(stream)

    async def call(request: Any, context: Context) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError as e:
            _forget_frames(e)
            return None  # gRPC discards a reply once the call has a status
    return shape.rebuild(call)


def _forget_frames(error: BaseException) -> None:
    error.__traceback__ = None
    error.__context__ = error.__cause__ = None
