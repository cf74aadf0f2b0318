"""Requests that are not protobuf: answered ``INVALID_ARGUMENT``, not gRPC's own ``UNKNOWN``.

gRPC answers a request its deserializer cannot parse with ``UNKNOWN`` and the text
``Unexpected <class 'google.protobuf.message.DecodeError'>: ...``: the wrong code (the client
sent something wrong; retrying it will not help) and a look at the server's insides.
:class:`MalformedRequests` (the innermost server interceptor) parses each request itself;
a message that does not parse — a unary request, or any item of a request stream — ends the
call ``INVALID_ARGUMENT`` naming the message type and the parser's reason. No servicer code
runs for it. The exception is an EvaluateLossStream item: it gets an error reply of its own (empty
``id``) and the stream goes on, as that method's contract says.

>>> from lossd.v1 import lossd_pb2
>>> parse = parsing(lossd_pb2.ListLossesRequest.FromString, "lossd.v1.ListLossesRequest message")
>>> parse(b"\\x0a\\x03mse").filter
'mse'
>>> print(parse(b"\\xff\\xff"))
the request is not a valid lossd.v1.ListLossesRequest message: Error parsing message...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from ..._methods import EVALUATE_LOSS_STREAM, REQUEST_TYPES
from ..._settings import first_line
from ..._wire import FieldError
from ..rpc._service import RefusedItem
from ._chain import StageInterceptor
from ._handlers import Context, Handler, shape_of

__all__ = ["Malformed", "MalformedRequests", "parsing"]


class Malformed:
    """Stands for a request that did not parse; ``str()`` is what the client is told."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def parsing(deserialize: Callable[[bytes], Any], what: str) -> Callable[[bytes], Any]:
    """``deserialize``, returning a :class:`Malformed` (which names ``what`` was expected) in place
    of raising."""

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as e:  # protobuf's DecodeError, or a framing check of lossd's own
            reason = first_line(e)
            return Malformed(f"the request is not a valid {what}: {reason[:300]}")

    return parse


class _MalformedItem(Exception):
    """Raised into the servicer by a request stream at an item that did not parse; the handler's
    own task turns it into the call's status (aborting from the task that reads the stream could
    collide with a reply being sent)."""


async def _checked(requests: AsyncIterator[Any], method: str) -> AsyncIterator[Any]:
    """The items, raising :class:`_MalformedItem` at one that did not parse; EvaluateLossStream's such item
    comes as a :class:`~lossd.server.rpc.RefusedItem`, which its servicer answers with an error reply and goes
    on (its contract: a bad request yields a reply carrying an error; the stream stays open)."""
    async for item in requests:
        if isinstance(item, Malformed):
            if method != EVALUATE_LOSS_STREAM.path:
                raise _MalformedItem(str(item))
            item = RefusedItem(FieldError("", str(item)))
        yield item


class MalformedRequests(StageInterceptor):
    """Answer requests that do not parse with ``INVALID_ARGUMENT`` (see the module docstring)."""

    def wrap(self, handler: Handler, method: str) -> Handler:
        """``handler`` parsing its requests itself (handlers that parse nothing: as they are)."""
        if handler.request_deserializer is None:
            return handler
        return _guarded(handler, method)


def _guarded(handler: Handler, method: str) -> Handler:
    shape = shape_of(handler)
    if shape is None:
        return handler  # a synchronous handler (none in lossd) keeps gRPC's own answer
    behavior, streaming_in = shape.behavior, shape.streaming_in

    def checked(request: Any) -> Any:
        """The request, or a stream of them that raises ``_MalformedItem`` at a bad item; a unary call's
        malformed request raises it at once (a plain function: no coroutine per call)."""
        if streaming_in:
            return _checked(request, method)
        if isinstance(request, Malformed):
            raise _MalformedItem(str(request))
        return request

    if shape.is_gen:
        async def guarded_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            replies = None
            try:
                replies = behavior(checked(request), context)  # a malformed unary request raises here
                async for reply in replies:
                    yield reply
            except _MalformedItem as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            finally:  # closed with this stream, as every stage closes what it wraps
                if replies is not None:
                    await replies.aclose()
        new: Any = guarded_stream
    else:
        async def guarded(request: Any, context: Context) -> Any:
            try:
                return await behavior(checked(request), context)
            except _MalformedItem as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        new = guarded
    deserialize = handler.request_deserializer
    assert deserialize is not None  # intercept_service guards only handlers that parse requests
    return shape.rebuild(new, request_deserializer=parsing(deserialize, _expected(deserialize, method)))


def _expected(deserialize: Callable[[bytes], Any], method: str) -> str:
    """What the request should have been: its message type (a method of lossd's contract, or a
    deserializer that is a message's ``FromString``), else the method's request."""
    descriptor = REQUEST_TYPES.get(method) or getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", None)
    if isinstance(name, str):
        return f"{name} message"
    return f"{method.lstrip('/')} request" if method else "request message"
