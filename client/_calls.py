"""The RPCs the SDK makes and what both clients share: settings, call options, method objects.

:class:`~lossd.client.Client` and :class:`~lossd.client.AsyncClient` differ only
in how they wait (a thread or ``await``). Everything else lives here or in
``_client.py`` (request building, reply decoding) and ``_errors.py`` (error
conversion). Every RPC's path, kind, idempotency and deadline rule come from
the contract through ``lossd._methods``; a :class:`Method` adds only how the
SDK reads its reply. To add an RPC (say a new ``TrainingService`` method):
declare it in the ``.proto`` (``option idempotency_level = NO_SIDE_EFFECTS``
when repeating it is harmless: the channel then retries it), ``make proto``,
pair its ``lossd._methods`` entry with its reply type here (or in
``_training.py``), then give each client a method of two lines that builds the
request, calls ``self._unary(METHOD, request, timeout)`` (or returns
``self._stream(METHOD, request, timeout, decode)`` for a streaming one) and
decodes the reply.

>>> EVALUATE_LOSS.path, EVALUATE_LOSS_STREAM.kind
('/lossd.v1.LossService/EvaluateLoss', 'stream_stream')
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf import message

from .. import _methods
from .._methods import Kind, Rpc
from ..v1 import lossd_pb2
from ._config import ClientConfig
from ._errors import Cancelled, LossdError

__all__ = [
    "Method",
    "ClientBase",
    "LIST_LOSSES",
    "EVALUATE_LOSS",
    "EVALUATE_LOSS_STREAM",
    "EVALUATE_LOSS_BATCH",
    "HEALTH_CHECK",
    "RequestSource",
    "stream_requests",
    "async_stream_requests",
]

R = TypeVar("R")
T = TypeVar("T")


def _serialize(request: message.Message | bytes) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


@dataclass(frozen=True)
class Method(Generic[R]):
    """One RPC as the SDK calls it: its ``lossd._methods`` entry and how its reply bytes are read."""

    rpc: Rpc
    deserialize: Callable[[bytes], R]

    @property
    def path(self) -> str:
        """The method's path, ``/lossd.v1.LossService/EvaluateLoss``."""
        return self.rpc.path

    @property
    def kind(self) -> Kind:
        """The channel's multi-callable for it: ``unary_unary``, ``unary_stream``, ..."""
        return self.rpc.kind

    @property
    def default_deadline(self) -> bool:
        """Whether the client's default deadline applies (long training streams: no)."""
        return self.rpc.default_deadline


LIST_LOSSES = Method(_methods.LIST_LOSSES, lossd_pb2.ListLossesResponse.FromString)
#: The reply stays bytes: ``EvaluateResult.from_bytes`` parses it with the gradients' payloads left in place.
EVALUATE_LOSS = Method(_methods.EVALUATE_LOSS, bytes)
EVALUATE_LOSS_STREAM = Method(
    _methods.EVALUATE_LOSS_STREAM, lossd_pb2.EvaluateLossStreamResponse.FromString
)
EVALUATE_LOSS_BATCH = Method(_methods.EVALUATE_LOSS_BATCH, lossd_pb2.EvaluateLossBatchResponse.FromString)
#: grpc.health.v1 messages are hand-encoded (``_health.py``): the SDK needs no grpcio-health-checking.
HEALTH_CHECK = Method(_methods.HEALTH_CHECK, bytes)


def stream_requests(requests: Iterable[lossd_pb2.EvaluateLossRequest],
                    start: int = 0) -> Iterator[lossd_pb2.EvaluateLossStreamRequest]:
    """Wrap requests as stream items whose ``id`` is their index (counted from ``start``)."""
    for i, r in enumerate(requests, start):
        yield lossd_pb2.EvaluateLossStreamRequest(id=str(i), request=r)


async def async_stream_requests(
    requests: AsyncIterable[lossd_pb2.EvaluateLossRequest],
) -> AsyncIterator[lossd_pb2.EvaluateLossStreamRequest]:
    """:func:`stream_requests` for an async iterable."""
    i = 0
    async for r in requests:
        yield lossd_pb2.EvaluateLossStreamRequest(id=str(i), request=r)
        i += 1


class RequestSource:
    """The requests of a client-streaming call as gRPC reads them, guarded: an exception of the
    caller's iterator ends the request stream (rather than cancelling the call, which is what gRPC
    does with it, and which loses the replies already on their way), so that the server answers
    every request read before it; :meth:`check`, called once the replies have ended, then raises
    it as a :class:`~lossd.client.LossdError` with code ``UNKNOWN`` (what the sync gRPC client
    raises for it), caused by the iterator's exception. Both clients behave the same.

    >>> source = RequestSource()
    >>> def requests():
    ...     yield 1
    ...     raise ValueError("no more")
    >>> list(source.guard(requests()))
    [1]
    >>> source.check()
    Traceback (most recent call last):
    ...
    lossd.client._errors.LossdError: UNKNOWN: Exception iterating requests: ValueError: no more (the requests \
before it were answered)
    """

    def __init__(self) -> None:
        self.error: Exception | None = None

    def guard(self, requests: Iterable[T]) -> Iterator[T]:
        """``requests``, ending where they raise (the exception is kept)."""
        try:
            yield from requests
        except Exception as e:
            self.error = e

    async def guard_async(self, requests: AsyncIterable[T]) -> AsyncIterator[T]:
        """:meth:`guard` for an async iterable."""
        try:
            async for request in requests:
                yield request
        except Exception as e:
            self.error = e

    def wrap(self, requests: Any) -> Any:
        """``requests`` (an iterable or an async iterable) guarded."""
        return self.guard_async(requests) if isinstance(requests, AsyncIterable) else self.guard(requests)

    def check(self) -> None:
        """Raise the iterator's exception, if it raised one, as a ``LossdError`` (code ``UNKNOWN``)."""
        if self.error is not None:
            e = self.error
            raise LossdError(f"Exception iterating requests: {type(e).__name__}: {e} (the requests before it were "
                             f"answered)", grpc.StatusCode.UNKNOWN) from e


class ClientBase:
    """Settings, channel construction and per-call options shared by both clients.

    Every argument has a ``LOSSD_*`` environment variable (see
    :class:`~lossd.client.ClientConfig`); the argument wins. The channel opens
    on first use, so constructing a client never blocks and never fails for
    an unreachable server. A closed client stays closed: a call raises
    :class:`~lossd.client.Cancelled` (as a call in flight when it closed does).

    A client pickles (and deep-copies) as its :class:`~lossd.client.ClientConfig` alone, the
    token included: the copy is a new client with the same settings, whose channel opens on its
    first call (its TLS files are read then), so that a ``RemoteLoss``, or a model holding one,
    can be deep-copied, pickled and ``torch.save``'d.
    """

    def __init__(
        self,
        target: str | Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        token: str | None = None,
        token_file: str | None = None,
        tls: bool | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        server_name: str | None = None,
        compression: str | None = None,
        keepalive_s: float | None = None,
        max_message_bytes: int | None = None,
        max_attempts: int | None = None,
        load_balancing: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.config = ClientConfig.from_env(
            target,
            timeout=timeout,
            token=token,
            token_file=token_file,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            server_name=server_name,
            compression=compression,
            keepalive_s=keepalive_s,
            max_message_bytes=max_message_bytes,
            max_attempts=max_attempts,
            load_balancing=load_balancing,
            options=options,
        )
        self._credentials = self.config.channel_credentials()  # reads the files now: errors show here
        self._reset()

    def _reset(self, credentials_read: bool = True) -> None:
        """No channel yet (it opens on first use); ``credentials_read``: ``_credentials`` holds them."""
        self._credentials_read = credentials_read
        self._channel: Any = None
        self._closed = False
        #: Set by close(): wakes a job stream waiting to re-attach.
        self._closing = threading.Event()
        self._callables: dict[str, Any] = {}
        self._opening = threading.Lock()  # threads sharing a Client open one channel

    def __getstate__(self) -> dict[str, Any]:
        """Only the settings travel (the token too): no channel, lock, credentials or caches."""
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A new, unopened client with the pickled settings; TLS files are read when it opens."""
        self.config = state["config"]
        self._credentials = None
        self._reset(credentials_read=False)

    @property
    def target(self) -> str:
        """The gRPC target the client connects to."""
        return self.config.target

    @property
    def timeout(self) -> float | None:
        """The default deadline of a call in seconds (``None``: none)."""
        return self.config.timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.target!r})"

    def _closed_error(self, in_flight: bool = False) -> Cancelled:
        """What a call on this closed client raises (``in_flight``: it was under way when the client closed)."""
        if in_flight:
            return Cancelled(f"the client of {self.config.target} was closed while the call was in flight")
        return Cancelled(f"the client of {self.config.target} is closed: make a new client")

    def _open(self, grpc_module: Any) -> Any:
        """The channel, opened on first use with ``grpc`` or ``grpc.aio`` (same signatures)."""
        if self._channel is not None:  # opened: no lock needed to read it
            return self._channel
        with self._opening:
            if self._closed:
                raise self._closed_error()
            if self._channel is None:
                if not self._credentials_read:  # an unpickled client reads its TLS files now
                    self._credentials = self.config.channel_credentials()
                    self._credentials_read = True
                kwargs = {"options": self.config.channel_options(), "compression": self.config.channel_compression()}
                if self._credentials is None:
                    self._channel = grpc_module.insecure_channel(self.config.target, **kwargs)
                else:
                    self._channel = grpc_module.secure_channel(self.config.target, self._credentials, **kwargs)
            return self._channel

    def _take_channel(self) -> Any:
        """Mark the client closed and hand over its channel (``None`` if it never opened) to be closed."""
        with self._opening:
            self._closed = True
            self._closing.set()
            channel, self._channel = self._channel, None
            return channel

    def _callable(self, channel: Any, method: Method[Any]) -> Any:
        """The channel's multi-callable for ``method``, made once."""
        found = self._callables.get(method.path)
        if found is None:
            found = getattr(channel, method.kind)(
                method.path, request_serializer=_serialize, response_deserializer=method.deserialize
            )
            self._callables[method.path] = found
        return found

    def _call_options(self, method: Method[Any], timeout: float | None) -> dict[str, Any]:
        """``timeout`` and ``metadata`` keyword arguments of one call."""
        return {
            "timeout": self.config.deadline(timeout, method.default_deadline),
            "metadata": self.config.metadata() or None,
        }
