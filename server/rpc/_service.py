"""The gRPC servicer for ``lossd.v1.LossService`` (grpc.aio).

Evaluations run on a thread pool so the event loop keeps serving health
checks and other calls while torch computes (torch releases the GIL).
``EvaluateLossStream`` pipelines: it keeps reading and evaluating the next
items while earlier replies are sent, and answers in request order.

Register the servicer with :func:`add_loss_service`: EvaluateLoss then sends
the reply bytes :func:`~lossd.server.rpc.handle_evaluate_bytes` framed
around the gradients' memory (EvaluateLossStream, each item's), without parsing
and re-serializing them.
(Registered with the generated ``add_LossServiceServicer_to_server`` it still
works, at the price of that round trip.) ``add_loss_service`` serves EvaluateLoss
client-streaming (:func:`only_request`: the one message, read as gRPC's unary handler reads it;
the end of the stream is not waited for), so that gRPC keeps no reference to large received bytes
once parsed; the wire and the contract are those of a unary call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeAlias, TypeVar

import grpc
import torch
from google.protobuf import struct_pb2
from grpc._cython import cygrpc  # type: ignore[attr-defined]  # ExecuteBatchError, not in grpc's stubs

from ..._framing import field_number, join, length_delimited, split_payloads
from ..._methods import EVALUATE_LOSS, EVALUATE_LOSS_BATCH, EVALUATE_LOSS_STREAM, LIST_LOSSES
from ..._wire import DEFAULT_MAX_MESSAGE_BYTES, FieldError, TensorLimits, reply_too_large
from ...v1 import lossd_pb2, lossd_pb2_grpc
from .._limits import DEFAULT_BATCH_WINDOW_US, BatchLimits
from ..losses import LossSpec, Registry, broadcast_elements
from ._batch import BatchCancelled, BatchControl, GroupPlan, batch_reply, evaluate_batch, payload_bytes
from ._batching import DynamicBatcher
from ._caps import MAX_STRING_BYTES, check_string, tensor_data_bytes
from ._plan import Plan, Plans
from ._request import handle_evaluate_bytes
from ._status import clip, rich_status

__all__ = [
    "INLINE_MAX_BYTES", "INLINE_MAX_ENTRIES", "STREAM_DRAINING_MESSAGE", "LossService", "OneRequest", "Received",
    "ReceivedRequest", "add_loss_service", "describe_loss", "only_request",
]

log = logging.getLogger("lossd.server")
_T = TypeVar("_T")

#: How an EvaluateLossStream open when the server drains ends (UNAVAILABLE), once the items it had read are answered.
STREAM_DRAINING_MESSAGE = ("the server is shutting down and reads no more items on this stream; those without a "
                           "reply were not evaluated: send them on a new stream, to another server or after it "
                           "restarts (health reports NOT_SERVING)")

#: Requests of at most this many bytes (as received; their tensors' data is in them) are evaluated on the event
#: loop: for a small evaluation the hop to a worker thread costs more CPU than the evaluation (docs/performance.md).
INLINE_MAX_BYTES = 16 * 1024
#: ... and at most this many ``inputs`` and ``grad_inputs`` entries in all (a loss takes a few).
INLINE_MAX_ENTRIES = 32
#: EvaluateLossStream: items of one stream in flight at most.
STREAM_WINDOW = 8
#: A loss whose evaluation on the event loop took more CPU than this :data:`SLOW_IN_A_ROW` times in a row
#: goes to the thread pool from then on, however small its tensors (a multi-scale SSIM or a clDice of
#: a few KiB takes 2-9 ms; a 100-element mse_loss 0.1-0.5 ms, up to 2.3 ms on a busy machine) ...
INLINE_MAX_CPU_S = 0.002
#: ... not counting its first :data:`SLOW_WARMUP` calls (the first builds the plan, and the first calls
#: of a loss pay torch's and numpy's warm-up: over 1 ms for mse_loss).
SLOW_IN_A_ROW, SLOW_WARMUP = 3, 2
#: A call on the loop that took more CPU than this (ten times INLINE_MAX_CPU_S: no busy machine makes a small
#: call's own CPU time so long) adds it to its loss's debt, which drains at INLINE_DEBT_DRAIN seconds a second;
#: a debt over INLINE_MAX_DEBT_S sends the loss to the pool at once. Without it, slow calls that alternated
#: with fast ones of the same loss never made a streak, and each held the loop (0.14 s each, indefinitely).
INLINE_HARD_CPU_S, INLINE_MAX_DEBT_S, INLINE_DEBT_DRAIN = 0.02, 0.1, 0.02
#: A small request whose inputs broadcast to more elements than this is evaluated on the pool: 16 KiB of
#: [1, 4000] and [4000, 1] float16 make 16 million (0.14 s); 2^18 elements of an elementwise loss take about
#: a millisecond.
INLINE_MAX_ELEMENTS = 1 << 18


def describe_loss(spec: LossSpec) -> lossd_pb2.LossInfo:
    """The ``LossInfo`` that ``ListLosses`` publishes for ``spec``."""
    params = []
    for p in spec.params:
        default = struct_pb2.Value()
        if p.default is None:
            default.null_value = struct_pb2.NULL_VALUE
        elif isinstance(p.default, bool):
            default.bool_value = p.default
        elif isinstance(p.default, (int, float)):
            default.number_value = float(p.default)
        elif isinstance(p.default, str):
            default.string_value = p.default
        elif isinstance(p.default, dict):  # an "object" param's: published as the object, not its keys
            default.struct_value.update(p.default)
        else:
            default.list_value.extend(list(p.default))
        params.append(
            lossd_pb2.ParamInfo(
                name=p.name, type=p.type, default=default, choices=list(p.choices),
                range=p.range_text(), doc=p.doc,
            )
        )
    return lossd_pb2.LossInfo(
        name=spec.name,
        aliases=list(spec.aliases),
        description=spec.description,
        inputs=[
            lossd_pb2.InputInfo(
                name=i.name, role=i.role, dtype_kind=i.kind, differentiable=i.differentiable,
                required=i.required, aliases=list(i.aliases), doc=i.doc,
            )
            for i in spec.inputs
        ],
        params=params,
        source=spec.source,
        dtypes=list(spec.float_dtypes),
        notes=spec.notes,
    )


class LossService(lossd_pb2_grpc.LossServiceServicer):
    """Serves ListLosses, EvaluateLoss and EvaluateLossStream from a registry."""

    def __init__(
        self,
        registry: Registry,
        executor: Executor,
        device: torch.device | None,
        max_tensor_elements: TensorLimits | int,
        *,
        stream_window_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        stream_threads: int = 2,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        batch_limits: BatchLimits = BatchLimits(),  # noqa: B008 - frozen
        batch_window_us: int = DEFAULT_BATCH_WINDOW_US,
    ) -> None:
        self._registry = registry
        self._executor = executor
        self._device = device
        #: Size limits on a request's tensors (an int: the per-tensor element limit).
        self._limits = TensorLimits.of(max_tensor_elements)
        #: EvaluateLossStream: the bytes its items in flight (:data:`STREAM_WINDOW`) hold at most (a request's
        #: until its reply is computed, then the reply's until it is sent; an item larger than that still
        #: runs, alone), and its items computing at once (the pool's threads: the replies of those are what a
        #: stream may hold beyond the bytes).
        self._stream_window_bytes = stream_window_bytes
        self._stream_threads = max(1, stream_threads)
        #: Replies over this size are refused with RESOURCE_EXHAUSTED saying how to raise it.
        self._max_message_bytes = max_message_bytes
        #: EvaluateLossBatch: most items and tensor bytes in one batch.
        self._batch_limits = batch_limits
        #: Validated signatures, reused by later requests of the same signature (docs/performance.md).
        self.plans: Plans[Plan] = Plans()
        #: The same for groups of calls evaluated together (the batch window's, EvaluateLossBatch's).
        self.group_plans: Plans[GroupPlan] = Plans()
        #: Dynamic batching of small concurrent EvaluateLoss calls (``--batch-window-us``; None: off).
        self.batcher = (DynamicBatcher(registry, device, self._limits, batch_window_us, plans=self.plans,
                                       group_plans=self.group_plans)
                        if batch_window_us > 0 else None)
        #: The progress of the latest EvaluateLossBatch (tests read it).
        self.last_batch: BatchControl | None = None
        #: Set by add_loss_service: EvaluateLoss may answer with serialized bytes.
        self.replies_as_bytes = False
        #: Losses (canonical names) evaluated on the pool however small the request: those that took over
        #: INLINE_MAX_CPU_S on the event loop, and from the start those never to run there (``LossSpec.inline``
        #: False: the plugins' losses, whose time may be spent sleeping or waiting, which no CPU clock sees).
        self.slow_losses: set[str] = {s.name for s in registry if not s.inline or s.work is not None}
        self._loop_calls: dict[str, int] = {}  # per loss: calls on the loop so far (up to SLOW_WARMUP) ...
        self._slow_streak: dict[str, int] = {}  # ... and how many of the latest in a row were slow
        self._loop_debt: dict[str, tuple[float, float]] = {}  # ... and its very slow time owed, and since when
        #: EvaluateLossStream: set by :meth:`end_streams` (the server drains); the readers of open streams
        #: that wait for their next item now (cancelled by it: their streams end once their items are answered).
        self._streams_ending = False
        self._idle_readers: set[asyncio.Task[bool]] = set()

    async def ListLosses(
        self, request: lossd_pb2.ListLossesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> lossd_pb2.ListLossesResponse:
        needle = request.filter.lower()
        specs = [
            s for s in self._registry
            if not needle or any(needle in n.lower() for n in (s.name, *s.aliases))
        ]
        return lossd_pb2.ListLossesResponse(losses=[describe_loss(s) for s in specs])

    def _inline(self, message: lossd_pb2.EvaluateLossRequest, size: int | None = None) -> bool:
        """Whether to evaluate ``message`` on the event loop: a single loss (no objective: its terms,
        parameters and patterns can be many) of a loss not found slow before (``slow_losses``), whose
        message is at most ``inline_max_bytes`` with its tensors in it (not split off: see :meth:`_run`).
        That bounds the tensors too: a tensor's data is on the wire, its raw bytes or 8 bytes a number,
        never fewer bytes than the tensor holds, and one whose data disagrees with its shape is refused
        before anything is allocated. Its per-entry work is bounded too: at most :data:`INLINE_MAX_ENTRIES`
        inputs and ``grad_inputs`` (1,024 ``grad_inputs`` took 11 ms), ``params`` of at most
        ``MAX_STRING_BYTES`` (about a microsecond a value to check and to read: 16 KB nesting lists, 11 ms).
        Anything more may take milliseconds and goes to the pool. ``size``: the message's received
        bytes, or a bound above them (a stream item's); without it the message is sized once its
        tensors' data is known to be small, for ``ByteSize`` serializes it here on the loop (a request
        of small tensors may still carry megabytes of ``params``)."""
        if message.terms or message.parameters or message.HasField("regularization"):
            return False
        if len(message.inputs) + len(message.grad_inputs) > INLINE_MAX_ENTRIES:
            return False
        if size is None:
            if tensor_data_bytes(message) > INLINE_MAX_BYTES:
                return False
            size = message.ByteSize()
        if size > INLINE_MAX_BYTES:
            return False
        if size > MAX_STRING_BYTES and message.params.ByteSize() > MAX_STRING_BYTES:
            return False
        # inputs that broadcast: the work grows with the product of their sizes, not their bytes. The shapes
        # are read only when the bytes allow that (a byte an element, at most): not for a 100-element mse_loss
        if (n := len(message.inputs)) > 1 and (size // n + 1) ** n > INLINE_MAX_ELEMENTS and \
                broadcast_elements([t.shape for t in message.inputs.values()]) > INLINE_MAX_ELEMENTS:
            return False
        # the loss name last: a stream item's is not checked yet, and reading 100 MB of it takes 0.05 s
        return not (self.slow_losses and self._registry.canonical(message.loss) in self.slow_losses)

    def _on_loop(self, name: str, work: Callable[..., _T], *args: Any) -> _T:
        """``work(*args)``, run here on the event loop; the loss called ``name`` (any of its names; one
        the registry does not know is not counted) joins ``slow_losses`` once :data:`SLOW_IN_A_ROW`
        calls of it in a row after its first :data:`SLOW_WARMUP` took over :data:`INLINE_MAX_CPU_S`
        of CPU (any call may meet a garbage collection or a busy machine), or at once when its very slow
        calls owe more than :data:`INLINE_MAX_DEBT_S`. A call that is refused counts as one that answers: its
        work was done on the loop all the same."""
        cpu = time.thread_time()
        try:
            return work(*args)
        finally:
            self._count_loop_time(name, time.thread_time() - cpu)

    def _count_loop_time(self, name: str, spent: float) -> None:
        """Count a call of the loss called ``name`` that took ``spent`` seconds of the loop's CPU (see
        :meth:`_on_loop`)."""
        loss = self._registry.canonical(name)
        if loss is None:
            return
        seen = self._loop_calls.get(loss, 0)
        if seen < SLOW_WARMUP:  # not even toward the debt: the first call on the loop's thread took 0.48 s
            self._loop_calls[loss] = seen + 1
        elif spent <= INLINE_MAX_CPU_S:
            self._slow_streak.pop(loss, None)
        elif (streak := self._slow_streak.get(loss, 0) + 1) >= SLOW_IN_A_ROW or \
                (spent > INLINE_HARD_CPU_S and self._owe(loss, spent) > INLINE_MAX_DEBT_S):
            self.slow_losses.add(loss)
        else:
            self._slow_streak[loss] = streak

    def _owe(self, loss: str, spent: float) -> float:
        """The loss's debt of very slow loop time (see :data:`INLINE_HARD_CPU_S`), ``spent`` added."""
        now = time.monotonic()
        debt, since = self._loop_debt.get(loss, (0.0, now))
        debt = max(0.0, debt - (now - since) * INLINE_DEBT_DRAIN) + spent
        self._loop_debt[loss] = (debt, now)
        return debt

    async def _run(self, request: lossd_pb2.EvaluateLossRequest | ReceivedRequest) -> bytes:
        """The serialized reply: computed right here when small, else on the thread pool."""
        message, payloads, checked, size = (
            request.message, request.payloads, request.caps_checked, request.size,
        ) if isinstance(request, ReceivedRequest) else (request, None, False, None)
        args = (self._registry, message, self._device, self._limits, payloads, self.plans, checked)
        small = not payloads and self._inline(message, size)  # split-off payloads: a large request
        key = self.batcher.key(message) if self.batcher is not None and small else None
        if key is not None and self.batcher is not None and self.batcher.arrive(key):
            reply = await self.batcher.submit(key, message)
        elif small:
            reply = self._on_loop(message.loss, handle_evaluate_bytes, *args)
        else:
            reply = await asyncio.get_running_loop().run_in_executor(self._executor, handle_evaluate_bytes, *args)
        if len(reply) > self._max_message_bytes:
            raise FieldError("", reply_too_large(len(reply), self._max_message_bytes), "RESOURCE_EXHAUSTED")
        return reply

    async def EvaluateLoss(
        self, request: lossd_pb2.EvaluateLossRequest | ReceivedRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> lossd_pb2.EvaluateLossResponse | bytes:
        try:
            reply = await self._run(request)
            return reply if self.replies_as_bytes else lossd_pb2.EvaluateLossResponse.FromString(reply)
        except FieldError as e:
            await context.abort_with_status(rich_status(e))
        except Exception:
            loss = request.loss or "+".join(t.loss for t in request.terms[:8])  # an objective: its terms
            log.exception("EvaluateLoss failed for loss %r", loss)
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"internal error evaluating {clip(repr(loss), 200)}; see server log")
        raise AssertionError("unreachable")  # pragma: no cover

    async def evaluate_one(
        self, requests: AsyncIterator[lossd_pb2.EvaluateLossRequest | ReceivedRequest] | OneRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> lossd_pb2.EvaluateLossResponse | bytes:
        """EvaluateLoss as :func:`add_loss_service` registers it: from a request stream that must hold
        exactly one message (:func:`only_request`), so that gRPC keeps no reference to the received bytes."""
        return await self.EvaluateLoss(await only_request(requests, context), context)

    async def EvaluateLossBatch(
        self, request: lossd_pb2.EvaluateLossBatchRequest, context: grpc.aio.ServicerContext[Any, Any],
        control: BatchControl | None = None,
    ) -> lossd_pb2.EvaluateLossBatchResponse | bytes:
        """Every item's outcome in order (server/rpc/_batch.py), computed on the thread pool. A call
        that ends early (cancelled, past its deadline) stops its batch before the next item; one whose
        replies pass the message limit together, as soon as they do (``BatchControl.done``)."""
        control = control or BatchControl()
        self.last_batch = control
        try:
            loop = asyncio.get_running_loop()
            try:  # the limits are checked there too (check_batch), before any item is decoded
                reply = await loop.run_in_executor(self._executor, self._batch_reply, request.items, control)
            finally:
                control.cancelled.set()  # the call is over, whichever way: no more items
            return reply if self.replies_as_bytes else lossd_pb2.EvaluateLossBatchResponse.FromString(reply)
        except FieldError as e:
            await context.abort_with_status(rich_status(e))
        except BatchCancelled:  # pragma: no cover - only once the call is already over
            raise asyncio.CancelledError from None
        except Exception:
            log.exception("EvaluateLossBatch failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error evaluating a batch; see server log")
        raise AssertionError("unreachable")  # pragma: no cover

    def _batch_reply(self, items: Sequence[lossd_pb2.EvaluateLossRequest], control: BatchControl) -> bytes:
        """A batch's serialized reply, its items evaluated and framed here on the pool (the framing of an
        8 MiB batch's replies takes 7 ms: not on the event loop)."""
        return batch_reply(evaluate_batch(self._registry, items, self._device, self._limits, control,
                                          self._max_message_bytes, self._batch_limits, self.group_plans))

    async def EvaluateLossStream(
        self,
        request_iterator: AsyncIterator[lossd_pb2.EvaluateLossStreamRequest | Received],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[lossd_pb2.EvaluateLossStreamResponse | bytes]:
        """Pipelined: a reader task starts each item as it arrives (up to the window), small
        ones right away on the loop, others on the thread pool, while this generator sends
        finished replies in request order. A failed item becomes an ``Error`` reply; the
        stream goes on. What a stream holds is bounded (:class:`_ByteBudget`): each item's
        request bytes until its reply is computed, then the reply's until it is sent, so a client
        that reads slowly stops the reader instead of piling up replies (a few KB of request can
        ask for megabytes of reply: ``reduction='none'`` over broadcast shapes). Once the server drains
        (:meth:`end_streams`) it reads no more items: those read are answered, then the call ends
        ``UNAVAILABLE``."""
        loop = asyncio.get_running_loop()
        in_flight: asyncio.Queue[_StreamReply | asyncio.Future[_StreamReply] | None] = asyncio.Queue(STREAM_WINDOW)
        budget = _ByteBudget(self._stream_window_bytes)
        computing = asyncio.Semaphore(self._stream_threads)

        def computed(size: int, future: asyncio.Future[_StreamReply]) -> None:
            computing.release()
            budget.release(size)
            if not future.cancelled() and future.exception() is None:
                budget.charge(_reply_bytes(future.result()))

        async def read() -> bool:  # True: it stopped reading because the server drains
            # (The task is looked up, never kept in a local: an error leaving this frame would hold the frame,
            # and through it the task that holds the error: a cycle holding the call's requests.)
            items = request_iterator.__aiter__()
            try:
                while not self._streams_ending:
                    self._idle_readers.add(asyncio.current_task())  # type: ignore[arg-type]
                    try:
                        item = await items.__anext__()
                    except StopAsyncIteration:
                        return False
                    except asyncio.CancelledError:
                        if not self._streams_ending:
                            raise
                        break  # cancelled by end_streams while it waited: no item was taken
                    finally:
                        self._idle_readers.discard(asyncio.current_task())
                    if isinstance(item, RefusedItem):
                        await budget.acquire(0)  # while the replies held fill the window
                        refused = _stream_error("", item.error)
                        budget.charge(_reply_bytes(refused))  # the sender releases what it sends
                        await in_flight.put(refused)
                        continue
                    if self._inline(item.request, item.size if isinstance(item, Received) else None):
                        await budget.acquire(0)  # while the replies held fill the window
                        reply = self._on_loop(item.request.loss, self._stream_reply, item)
                        budget.charge(_reply_bytes(reply))
                        await in_flight.put(reply)
                    else:  # what it holds while it waits: its received bytes (at least its tensors' bytes)
                        size = item.size if isinstance(item, Received) and item.size else payload_bytes(item.request)
                        await budget.acquire(size)
                        await computing.acquire()
                        future = loop.run_in_executor(self._executor, self._stream_reply, item)
                        future.add_done_callback(functools.partial(computed, size))
                        await in_flight.put(future)
                return True
            finally:
                if not in_flight.full():  # when full, the sender sees the reader done once it drains
                    in_flight.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                if in_flight.empty() and reader.done():
                    break
                entry = await in_flight.get()
                if entry is None:
                    break
                reply = await entry if isinstance(entry, asyncio.Future) else entry
                yield reply
                budget.release(_reply_bytes(reply))
            # A failed read (say, a malformed message) ends the call with its error; one the drain stopped, so.
            if await reader:
                await context.abort(grpc.StatusCode.UNAVAILABLE, STREAM_DRAINING_MESSAGE)
        finally:
            reader.cancel()
            # A call that ends early (cancelled, past its deadline, failed) leaves no work behind:
            # items still waiting for a thread are dropped (one already computing finishes).
            while not in_flight.empty():
                entry = in_flight.get_nowait()
                if isinstance(entry, asyncio.Future):
                    entry.cancel()

    def end_streams(self) -> None:
        """The server drains: every EvaluateLossStream open now or later stops reading items and, once
        those it has read are answered, ends ``UNAVAILABLE`` (:data:`STREAM_DRAINING_MESSAGE`), so that an
        idle stream does not hold the drain for its whole grace period."""
        self._streams_ending = True
        for reader in list(self._idle_readers):
            reader.cancel()

    def _stream_reply(self, item: lossd_pb2.EvaluateLossStreamRequest | Received) -> _StreamReply:
        """One stream item's reply (on the thread pool): its response, or its error; a response
        stays the framed bytes when the service was registered by :func:`add_loss_service`."""
        try:
            check_string(item.id, "id")  # the item's own string; its request's caps: checked by the evaluation
        except FieldError as e:
            return _stream_error("", e)  # not echoed
        try:
            reply = handle_evaluate_bytes(self._registry, item.request, self._device, self._limits, None, self.plans)
        except FieldError as e:
            return _stream_error(item.id, e)
        except Exception:
            log.exception("EvaluateLossStream item %r failed", item.id)
            return _stream_error(item.id, FieldError("", "internal error; see server log", "INTERNAL"))
        if len(reply) + len(item.id) + 16 > self._max_message_bytes:  # 16: the item's own framing
            message = reply_too_large(len(reply), self._max_message_bytes)
            return _stream_error(item.id, FieldError("", message, "RESOURCE_EXHAUSTED"))
        # Wrap the framed reply without re-encoding it: id, then the response's bytes.
        head = lossd_pb2.EvaluateLossStreamResponse(id=item.id).SerializeToString()
        framed = join([head, *length_delimited(_STREAM_RESPONSE, [reply])])
        return framed if self.replies_as_bytes else lossd_pb2.EvaluateLossStreamResponse.FromString(framed)


_STREAM_RESPONSE = field_number(lossd_pb2.EvaluateLossStreamResponse, "response")


def _stream_error(item_id: str, e: FieldError) -> lossd_pb2.EvaluateLossStreamResponse:
    """A stream item's ``Error`` reply for ``e``."""
    return lossd_pb2.EvaluateLossStreamResponse(id=item_id, error=lossd_pb2.Error(code=e.code, message=str(e),
                                                                                  field=e.field))


class RefusedItem:
    """An EvaluateLossStream item refused before it reached the servicer (bytes that are not an
    ``EvaluateLossStreamRequest``): answered with an ``Error`` reply (no ``id``: none could be read), and
    the stream goes on, as the contract says of a bad request (the interceptors make it of a ``Malformed``)."""

    __slots__ = ("error",)

    def __init__(self, error: FieldError) -> None:
        self.error = error


#: A stream item's reply: the message, or its serialized bytes (see ``replies_as_bytes``).
_StreamReply: TypeAlias = "lossd_pb2.EvaluateLossStreamResponse | bytes"


class Received:
    """A message parsed from the bytes it came in, with their count (``size``, when known): the
    message's size found without serializing it (:meth:`LossService._inline`); attributes read
    through to the message, so interceptors and logs see it. EvaluateLossStream's items come as
    this (:func:`add_loss_service`); EvaluateLoss's requests as :class:`ReceivedRequest`.

    >>> item = _parse_stream_item(lossd_pb2.EvaluateLossStreamRequest(id="a").SerializeToString())
    >>> item.id, item.size
    ('a', 3)
    """

    __slots__ = ("message", "size")

    def __init__(self, message: Any, size: int | None = None) -> None:
        self.message = message
        self.size = size

    def __getattr__(self, name: str) -> Any:
        return getattr(self.message, name)


class ReceivedRequest(Received):
    """An ``EvaluateLossRequest`` parsed with its tensors' ``raw`` bytes left in the
    received message (:func:`lossd._framing.split_payloads`)."""

    __slots__ = ("payloads", "caps_checked")

    def __init__(self, message: lossd_pb2.EvaluateLossRequest, payloads: dict[str, memoryview],
                 size: int | None = None) -> None:
        super().__init__(message, size)
        self.payloads = payloads
        #: Set by the LargeRequests interceptor once it has checked the message's caps, so that the
        #: evaluation does not check them a second time.
        self.caps_checked = False


def _parse_evaluate_request(data: bytes) -> ReceivedRequest:
    return ReceivedRequest(*split_payloads(data, lossd_pb2.EvaluateLossRequest), len(data))


def _parse_stream_item(data: bytes) -> Received:
    return Received(lossd_pb2.EvaluateLossStreamRequest.FromString(data), len(data))


class OneRequest:
    """A request stream of one message already read: the interceptor chain reads EvaluateLoss's one
    message before its stages see the call (``as_unary``), then hands it to the servicer's
    client-streaming behavior as this. :func:`only_request` returns it without reading again;
    any other behavior may iterate it.

    >>> async def messages():
    ...     return [m async for m in OneRequest("m")]
    >>> asyncio.run(messages())
    ['m']
    """

    __slots__ = ("request", "_read")

    def __init__(self, request: Any) -> None:
        self.request = request
        self._read = False

    def __aiter__(self) -> OneRequest:
        return self

    async def __anext__(self) -> Any:
        if self._read:
            raise StopAsyncIteration
        self._read = True
        return self.request


async def only_request(requests: AsyncIterator[_T] | OneRequest,
                       context: grpc.aio.ServicerContext[Any, Any]) -> _T:
    """The one message of a unary call's request stream (EvaluateLoss, as :func:`add_loss_service` registers it),
    returned as soon as it has come, as gRPC's unary handler would: a second message is not read. No message:
    ``INVALID_ARGUMENT``.

    The end of the stream is not waited for. It was, for requests of 64 KiB and more (to refuse a second
    message): a client that sent its message and never half-closed held the call, its bytes and none of the
    limits' slots (those are taken once the message is read), and a drain did not count it.

    gRPC's stream is read with ``context.read()``, which is what its request iterator does inside, and which
    keeps no reference to the message once returned. The iterator, left before its end, is an async generator
    that asyncio closes in a task of its own, scheduled from the garbage collector through
    ``call_soon_threadsafe`` (a wake-up of the loop): one more task and loop turn for every call.
    """
    if isinstance(requests, OneRequest):
        return requests.request  # type: ignore[no-any-return]
    try:
        first = await context.read()
    except FieldError as e:
        await context.abort_with_status(rich_status(e))
        raise AssertionError("unreachable") from None  # pragma: no cover
    if first is grpc.aio.EOF:
        try:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "EvaluateLoss takes one request message; none came")
        except cygrpc.ExecuteBatchError:  # gRPC ended the call itself: its message was over the size limit
            raise asyncio.CancelledError() from None  # once inflated; the client has RESOURCE_EXHAUSTED
    return first  # type: ignore[no-any-return]


class _ByteBudget:
    """At most ``limit`` bytes in flight; an item larger than that runs alone.

    One task acquires (the stream's reader), the sender releases; both on the loop.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._freed = asyncio.Event()

    async def acquire(self, size: int) -> None:
        while self._used and self._used + size > self._limit:
            self._freed.clear()
            await self._freed.wait()
        self._used += size

    def release(self, size: int) -> None:
        self._used -= size
        self._freed.set()

    def charge(self, size: int) -> None:
        """Count ``size`` bytes held now (a computed reply), without waiting: the next :meth:`acquire` waits."""
        self._used += size


def _reply_bytes(reply: _StreamReply) -> int:
    return len(reply) if isinstance(reply, bytes) else reply.ByteSize()


def add_loss_service(service: LossService, server: Any) -> None:
    """Register ``service`` on a grpc.aio ``server``, like the generated
    ``add_LossServiceServicer_to_server``, except that EvaluateLoss reads its
    request's tensor payloads in place (:class:`ReceivedRequest`), EvaluateLossStream's items come
    with their received size (:class:`Received`), and EvaluateLoss and EvaluateLossStream send
    the reply bytes the service framed as they are."""
    service.replies_as_bytes = True
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        LIST_LOSSES.name: grpc.unary_unary_rpc_method_handler(
            service.ListLosses,
            request_deserializer=lossd_pb2.ListLossesRequest.FromString,
            response_serializer=lossd_pb2.ListLossesResponse.SerializeToString,
        ),
        EVALUATE_LOSS.name: grpc.stream_unary_rpc_method_handler(
            service.evaluate_one,
            request_deserializer=_parse_evaluate_request,
            response_serializer=_serialized,
        ),
        EVALUATE_LOSS_BATCH.name: grpc.unary_unary_rpc_method_handler(
            service.EvaluateLossBatch,
            request_deserializer=lossd_pb2.EvaluateLossBatchRequest.FromString,
            response_serializer=_serialized,
        ),
        EVALUATE_LOSS_STREAM.name: grpc.stream_stream_rpc_method_handler(
            service.EvaluateLossStream,
            request_deserializer=_parse_stream_item,
            response_serializer=_serialized,
        ),
    }
    name = LIST_LOSSES.service
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)


def _serialized(reply: lossd_pb2.EvaluateLossResponse | lossd_pb2.EvaluateLossBatchResponse | bytes) -> bytes:
    return reply if isinstance(reply, bytes) else reply.SerializeToString()
