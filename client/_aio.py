"""The asyncio SDK client: :class:`AsyncClient`, the ``await`` twin of :class:`~lossd.client.Client`.

Same constructor, same settings (``LOSSD_*``), same methods, same results and
errors; only the waiting differs. The channel opens on first use, inside the
running event loop::

    >>> import asyncio
    >>> async def main():
    ...     async with AsyncClient("127.0.0.1:50051") as c:   # doctest: +SKIP
    ...         r = await c.evaluate("mse", [1.0, 2.0], [0.0, 0.0], reduction="sum")
    ...         return r.value
    >>> asyncio.run(main())  # doctest: +SKIP
    5.0
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar, overload

import grpc
import grpc.aio

from ..v1 import lossd_pb2
from ._calls import (
    EVALUATE_LOSS,
    EVALUATE_LOSS_BATCH,
    EVALUATE_LOSS_STREAM,
    HEALTH_CHECK,
    LIST_LOSSES,
    Method,
    RequestSource,
    async_stream_requests,
    stream_requests,
)
from ._client import (
    MANY_IN_FLIGHT,
    EvaluateResult,
    Evaluating,
    ItemFramer,
    ManyRequests,
    Packed,
    SharedSums,
    batch_outcomes,
    iter_prepared,
    kept,
    many_batch_bytes,
    outcome_by_id,
    pack_many,
    stream_outcome,
    streams_instead,
    time_left,
)
from ._errors import Cancelled, LossdError, raising_lossd_errors
from ._health import health_request, health_status
from ._jobs import AsyncJobs

__all__ = ["AsyncClient"]

R = TypeVar("R")
T = TypeVar("T")


def _task_cancelled(closed: bool) -> bool:
    """Whether a ``CancelledError`` out of ``grpc.aio`` cancels the awaiting task itself (``task.cancel()``,
    ``asyncio.wait_for``, ``asyncio.timeout``: it must propagate) rather than saying that gRPC cancelled the
    call on the client's side (the client was closed). Python 3.10 cannot tell them apart (no
    ``Task.cancelling``): there, only a closed client makes it the call's."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    if cancelling is None:
        return not closed
    return bool(cancelling() > 0)


class AsyncClient(Evaluating[Awaitable[EvaluateResult]], AsyncJobs):
    """A ``grpc.aio`` connection to a lossd server; every call is awaited.

    Arguments and settings are those of :class:`~lossd.client.Client`. Use it
    as ``async with AsyncClient() as c:`` or call :meth:`close`. Its channel
    belongs to the event loop of its first call: use one client per loop.

    >>> async def main():
    ...     async with AsyncClient() as c:
    ...         return [i.name for i in await c.list_losses("mse")], await c.health()
    >>> asyncio.run(main())  # doctest: +SKIP
    (['mse_loss'], 'SERVING')
    """

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying ``grpc.aio.Channel`` (opened on first use, in the running loop; another loop's use is a
        ``RuntimeError`` saying so, where grpc.aio said "Event loop is closed" or "attached to a different loop").
        """
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if self._channel is None:
            channel: grpc.aio.Channel = self._open(grpc.aio)
            self._opened_in = None if loop is None else weakref.ref(loop)
            return channel
        if loop is not None and self._opened_in is not None and self._opened_in() is not loop:
            raise RuntimeError("this AsyncClient's channel belongs to the event loop it was first used in; make one "
                               "AsyncClient per event loop (each asyncio.run() starts a new loop)")
        opened: grpc.aio.Channel = self._open(grpc.aio)
        return opened

    #: The event loop the channel was opened in (a weak reference), once it was.
    _opened_in: weakref.ref[asyncio.AbstractEventLoop] | None = None

    async def close(self) -> None:
        """Close the channel; calls in flight end with :class:`~lossd.client.Cancelled`, as in
        :meth:`Client.close <lossd.client.Client.close>`, and so does any later call."""
        channel = self._take_channel()
        for waiting in self._waits:
            if not waiting.done():
                waiting.set_result(None)
        if channel is not None:
            await channel.close()

    async def _backoff(self, seconds: float) -> None:
        if self._closed:
            raise self._closed_error(in_flight=True)
        woken = asyncio.get_running_loop().create_future()
        self._waits.add(woken)
        try:
            await asyncio.wait([woken], timeout=seconds)
        finally:
            self._waits.discard(woken)
        if self._closed:
            raise self._closed_error(in_flight=True)

    @functools.cached_property
    def _waits(self) -> set[asyncio.Future[None]]:
        """Job streams waiting to re-attach (:meth:`_backoff`), which close() wakes."""
        return set()

    @contextlib.contextmanager
    def _raising(self) -> Iterator[None]:
        """:func:`~lossd.client._errors.raising_lossd_errors`, and the errors the sync client raises where
        ``grpc.aio`` raises its own: :class:`~lossd.client.Cancelled` for a call that gRPC cancelled on the
        client's side (the client was closed) while the awaiting task was not itself being cancelled (a
        cancelled task still gets its ``CancelledError``), and for a call on a closed client."""
        try:
            with raising_lossd_errors():
                yield
        except asyncio.CancelledError:
            if _task_cancelled(self._closed):
                raise
            if self._closed:
                raise self._closed_error(in_flight=True) from None
            raise Cancelled("the call was cancelled on the client's side") from None
        except grpc.aio.UsageError:  # a call made on the channel after it closed
            if self._closed:
                raise self._closed_error() from None
            raise

    async def _unary(self, method: Method[R], request: Any, timeout: float | None) -> R:
        with self._raising():
            reply: R = await self._callable(self.channel, method)(request, **self._call_options(method, timeout))
        return reply

    async def _stream(
        self, method: Method[R], request: Any, timeout: float | None, decode: Callable[[R], T]
    ) -> AsyncIterator[T]:
        """Decoded replies of a server- or bidi-streaming call, which is cancelled when
        the caller stops iterating or ``decode`` raises. A request iterator that raises ends
        the requests; its exception is raised after the replies (:class:`RequestSource`)."""
        source = RequestSource() if method.kind.startswith("stream_") else None
        call = self._callable(self.channel, method)(request if source is None else source.wrap(request),
                                                    **self._call_options(method, timeout))
        try:
            with self._raising():
                async for reply in call:
                    yield decode(reply)
            if source is not None:
                source.check()
        finally:
            call.cancel()

    async def list_losses(self, filter: str = "", *, timeout: float | None = None) -> list[lossd_pb2.LossInfo]:
        """Every loss the server offers, like :meth:`Client.list_losses <lossd.client.Client.list_losses>`."""
        return list((await self._unary(LIST_LOSSES, lossd_pb2.ListLossesRequest(filter=filter), timeout)).losses)

    async def evaluate_request(
        self, request: lossd_pb2.EvaluateLossRequest | bytes, *, as_torch: bool = False, timeout: float | None = None
    ) -> EvaluateResult:
        """Send a prepared ``EvaluateLossRequest`` (or its bytes): ``await c.evaluate_request(request)``."""
        return self._decode_reply(await self._unary(EVALUATE_LOSS, request, timeout), as_torch)

    @overload
    def evaluate_stream(
        self, requests: Iterable[lossd_pb2.EvaluateLossRequest] | AsyncIterable[lossd_pb2.EvaluateLossRequest],
        *, as_torch: bool = ..., timeout: float | None = ..., raise_on_error: Literal[True] = ...,
    ) -> AsyncIterator[EvaluateResult]: ...

    @overload
    def evaluate_stream(
        self, requests: Iterable[lossd_pb2.EvaluateLossRequest] | AsyncIterable[lossd_pb2.EvaluateLossRequest],
        *, as_torch: bool = ..., timeout: float | None = ..., raise_on_error: bool,
    ) -> AsyncIterator[EvaluateResult | LossdError]: ...

    def evaluate_stream(
        self,
        requests: Iterable[lossd_pb2.EvaluateLossRequest] | AsyncIterable[lossd_pb2.EvaluateLossRequest],
        *,
        as_torch: bool = False,
        timeout: float | None = None,
        raise_on_error: bool = True,
    ) -> AsyncIterator[EvaluateResult | LossdError]:
        """Pipeline requests (an iterable or async iterable) over one stream: ``async for r in ...``.

        Results come in request order; errors behave as in
        :meth:`Client.evaluate_stream <lossd.client.Client.evaluate_stream>`.

        >>> [r.value async for r in c.evaluate_stream(requests)]  # doctest: +SKIP
        [1.0, 4.0]
        """
        items = async_stream_requests(requests) if isinstance(requests, AsyncIterable) else stream_requests(requests)
        outcome = functools.partial(stream_outcome, as_torch=as_torch, raise_on_error=raise_on_error)
        return self._stream(EVALUATE_LOSS_STREAM, items, timeout, outcome)

    async def evaluate_many(
        self,
        requests: ManyRequests,
        *,
        as_torch: bool = False,
        timeout: float | None = None,
        raise_on_error: bool = False,
    ) -> list[EvaluateResult | LossdError]:
        """Many evaluations packed in ``EvaluateLossBatch`` calls (two in flight), outcomes in request
        order, like :meth:`Client.evaluate_many <lossd.client.Client.evaluate_many>`:
        ``await c.evaluate_many(items)``."""
        framer, sums = ItemFramer(as_torch), SharedSums()
        flags, it = framer.flags, iter(sums.items(requests))
        seen: list[Any] = []  # the items read so far, for a server without EvaluateLossBatch
        source = (framer.frame(i, item) for i, item in enumerate(kept(it, seen)))
        deadline = self.config.deadline(timeout, EVALUATE_LOSS_BATCH.default_deadline)
        ends = None if deadline is None else time.monotonic() + deadline
        call = self._callable(self.channel, EVALUATE_LOSS_BATCH)
        out: list[EvaluateResult | LossdError] = []
        in_flight: collections.deque[tuple[Packed, Any]] = collections.deque()

        async def collect() -> None:
            packed, pending = in_flight.popleft()
            out.extend(batch_outcomes(await pending, packed.start, flags, raise_on_error))

        try:
            with self._raising():
                for packed in pack_many(source, max_bytes=many_batch_bytes(self.config.max_message_bytes)):
                    left = None if ends is None else max(0.0, ends - time.monotonic())
                    in_flight.append((packed, call(packed.body, timeout=left, metadata=self.config.metadata() or None)))
                    if len(in_flight) >= MANY_IN_FLIGHT:
                        await collect()
                while in_flight:
                    await collect()
        except LossdError as e:
            if not streams_instead(e, out):
                raise
            for _, pending in in_flight:  # the batches sent after the refused one: streamed below
                pending.cancel()
            left = time_left(ends)
            done, flags = len(out), [False] * len(out)  # the items answered so far keep their outcomes
            rest = stream_requests(iter_prepared(itertools.chain(seen[done:], it), as_torch, flags, done), done)
            outcome = outcome_by_id(flags, raise_on_error)
            return sums.apply(out + [r async for r in self._stream(EVALUATE_LOSS_STREAM, rest, left, outcome)])
        finally:
            for _, pending in in_flight:
                pending.cancel()
        return sums.apply(out)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The server's ``grpc.health.v1`` status, like :meth:`Client.health <lossd.client.Client.health>`."""
        return health_status(await self._unary(HEALTH_CHECK, health_request(service), timeout))
