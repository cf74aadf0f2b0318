"""Large requests are parsed, and their strings and repeated fields checked, off the event loop.

gRPC calls a method's request deserializer on the event loop. For a large message that is
slow: protobuf validates every string as UTF-8 (a 100 MB loss name: 0.3 s; lossd's
``split_payloads``, 0.7 s), and :func:`~lossd.server.rpc._caps.check_request` walks
every field. :class:`LargeRequests`, the outermost server interceptor, gives gRPC a
deserializer that keeps a message of more than :data:`INLINE_PARSE_BYTES` as it came
(:class:`Unparsed`) and parses it on a thread of the default executor, where the caps are
checked too, before the call's first interceptor sees it (an over-long string is refused from its
length prefix before the parse: :func:`~lossd.server.rpc._caps.check_wire`); smaller messages are parsed
right away, and their caps checked there in at most :data:`~lossd.server.rpc._caps.LOOP_CHECK_STEPS`
steps (well under a millisecond), or on a thread when they need more (a crafted 35 KB ``params``
nesting lists: 14,000 steps, 14 ms). A request over a cap ends the call with
``INVALID_ARGUMENT`` naming the field. Stream items (EvaluateLossStream) are parsed the same
way; their caps are checked as each is evaluated (a refused item is an ``Error`` reply).
Handlers without a deserializer (calls refused before parsing: authentication, drain) are
left as they are.

>>> parse = deferring(bytes.decode)
>>> parse(b"small"), type(parse(bytes(INLINE_PARSE_BYTES + 1))).__name__
('small', 'Unparsed')
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from ..._methods import REQUEST_TYPES
from ..._wire import FieldError
from ..rpc._caps import LOOP_CHECK_STEPS, WalkTooLong, check_request, check_wire
from ..rpc._service import Received
from ..rpc._status import rich_status
from ._chain import StageInterceptor
from ._handlers import Context, Handler, shape_of, streams_requests
from ._malformed import Malformed

__all__ = ["INLINE_PARSE_BYTES", "LargeRequests", "TENSOR_METHODS", "Unparsed", "deferring"]

#: Messages up to this size are parsed (and their caps checked) on the event loop; it is also the
#: largest request of a method that carries no tensors (all but :data:`TENSOR_METHODS`): within the
#: caps such a request is a few KiB, so a larger one is refused from its length, unparsed.
INLINE_PARSE_BYTES = 64 * 1024


def _carries_tensors(message: Descriptor, seen: frozenset[str] = frozenset()) -> bool:
    """Whether ``message`` holds a ``lossd.v1.Tensor`` at any depth (read from the descriptors, so a
    new RPC that carries tensors is never refused as oversized by mistake)."""
    if message.full_name == "lossd.v1.Tensor":
        return True
    return any(f.message_type is not None and f.message_type.full_name not in seen
               and _carries_tensors(f.message_type, seen | {message.full_name}) for f in message.fields)


#: Methods whose requests carry tensors (up to --max-message-bytes): EvaluateLoss, EvaluateLossStream,
#: EvaluateLossBatch, TrainJob.
TENSOR_METHODS = frozenset(path for path, message in REQUEST_TYPES.items() if _carries_tensors(message))


class Unparsed:
    """A received message left as bytes, with the deserializer that will parse it (``None``: the
    message is too large for its method and is refused) and its type (``None``: unknown, its
    strings are checked after the parse only)."""

    __slots__ = ("data", "parse", "message")

    def __init__(self, data: bytes, parse: Callable[[bytes], Any] | None, message: Descriptor | None = None) -> None:
        self.data = data
        self.parse = parse
        self.message = message


def deferring(deserialize: Callable[[bytes], Any], carries_tensors: bool = True,
              message: Descriptor | None = None) -> Callable[[bytes], Any]:
    """``deserialize`` for small messages; larger ones come back as :class:`Unparsed`."""

    def parse(data: bytes) -> Any:
        if len(data) <= INLINE_PARSE_BYTES:
            return deserialize(data)
        return Unparsed(data, deserialize if carries_tensors else None, message)

    return parse


def _parse_and_check(item: Unparsed, check: bool) -> Any:
    if item.parse is None:
        raise FieldError("", f"the request is {len(item.data)} bytes; a request of this method, which carries no "
                        f"tensors, is at most {INLINE_PARSE_BYTES} bytes")
    if check and item.message is not None:
        check_wire(item.data, item.message)  # an over-long string, before protobuf validates it holding the GIL
    request = item.parse(item.data)
    if check:
        _check(request, len(item.data))  # too large to be sized: walked
    return request


def _check(request: Any, received: int = 0, max_steps: int | None = None) -> None:
    """Check ``request``'s caps (``received``: its size, when known); raises :class:`FieldError`, or
    :class:`WalkTooLong` past ``max_steps``."""
    message = getattr(request, "message", request)  # EvaluateLoss: a ReceivedRequest around the message
    if isinstance(message, Message):
        check_request(message, at_least=received, max_steps=max_steps)
        if message is not request:
            request.caps_checked = True  # the evaluation need not check them again


async def _ready(request: Any, check: bool) -> Any:
    """``request`` parsed (off the loop when it came as :class:`Unparsed`) and, when ``check``, its
    caps checked (off the loop when that takes more than :data:`LOOP_CHECK_STEPS`); raises
    :class:`FieldError` over a cap."""
    if isinstance(request, Unparsed) and request.parse is None:
        return _parse_and_check(request, check)  # refused from its length
    if isinstance(request, Unparsed):
        return await asyncio.get_running_loop().run_in_executor(None, _parse_and_check, request, check)
    if check:
        received = (request.size or 0) if isinstance(request, Received) else 0  # known without sizing it
        try:
            _check(request, received, LOOP_CHECK_STEPS)
        except WalkTooLong:
            await asyncio.get_running_loop().run_in_executor(None, _check, request, received)
    return request


async def _parsed_items(requests: AsyncIterator[Any], check: bool) -> AsyncIterator[Any]:
    """Each item parsed (and, when ``check``, its caps checked: a unary method's one request). An item
    refused here comes as :class:`~._malformed.Malformed`, which the innermost stage turns into the
    call's ``INVALID_ARGUMENT`` whatever servicer reads the stream (raised into gRPC's reflection
    servicer, the refusal was ``UNKNOWN`` naming lossd's exception class)."""
    async for item in requests:
        try:
            request = await _ready(item, check)
        except FieldError as e:
            _drop(item)
            yield Malformed(str(e))
            return
        yield request


def _drop(request: Any) -> None:
    """Let go of a refused request's bytes: the refusal's traceback holds this call's frames in a
    reference cycle, which lives until the next garbage collection (else 100 MB per refused 100 MB request)."""
    if isinstance(request, Unparsed):
        request.data = b""


class LargeRequests(StageInterceptor):
    """Parse large requests off the event loop and check every request's caps (module docstring).

    A stage of the :class:`~._chain.InterceptorChain`: admits every call; its wrapping depends on
    the method only, so the chain builds it once per method."""

    def wrap(self, handler: Handler, method: str) -> Handler:
        if handler.request_deserializer is None:
            return handler
        shape = shape_of(handler)
        if shape is None:
            return handler
        behavior, streaming_in = shape.behavior, shape.streaming_in
        unary = not streams_requests(handler, method)  # a unary method's one request: its caps checked here

        async def ready(request: Any, context: Context) -> Any:
            if streaming_in:
                return _parsed_items(request, unary)
            try:
                parsed = await _ready(request, check=True)
                _drop(request)  # this frame holds `request` for the whole call; the parsed one holds the payloads
                return parsed
            except FieldError as e:
                status = rich_status(e)
            _drop(request)
            await context.abort_with_status(status)

        if shape.is_gen:
            async def stream_behavior(request: Any, context: Context) -> AsyncIterator[Any]:
                replies = behavior(await ready(request, context), context)
                try:
                    async for reply in replies:
                        yield reply
                finally:  # closed with this stream, as every stage closes what it wraps
                    await replies.aclose()
            new: Any = stream_behavior
        else:
            async def unary_behavior(request: Any, context: Context) -> Any:
                return await behavior(await ready(request, context), context)
            new = unary_behavior
        return shape.rebuild(new, request_deserializer=deferring(handler.request_deserializer, method in TENSOR_METHODS,
                                                                 REQUEST_TYPES.get(method)))
