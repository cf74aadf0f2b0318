"""The RPCs the SDK makes and what both clients share: settings, call options, method objects.

:class:`~lossd.client.Client` and :class:`~lossd.client.AsyncClient` differ only
in how they wait (a thread or ``await``). Everything else lives here or in
``_client.py`` (request building, reply decoding) and ``_errors.py`` (error
conversion). To add an RPC (say TrainingService's ``GetJob``): describe it with
a :class:`Method` below, then give each client a method of two lines that builds
the request, calls ``self._unary(METHOD, request, timeout)`` (or returns
``self._stream(METHOD, request, timeout, decode)`` for a streaming one) and
decodes the reply. A long stream that must not inherit the client's default
deadline (``TrainJob``, ``WatchJob``) says so with ``default_deadline=False``:
``Method("/lossd.v1.TrainingService/WatchJob", WatchJobResponse.FromString,
"unary_stream", default_deadline=False)``. Retries are configured by name in
``_config.RETRIED_METHODS``.

>>> EVALUATE_LOSS.path, EVALUATE_LOSS_STREAM.kind
('/lossd.v1.LossService/EvaluateLoss', 'stream_stream')
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
import threading
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from google.protobuf import message

from ..v1 import lossd_pb2
from ._config import ClientConfig

__all__ = [
    "Method",
    "ClientBase",
    "LIST_LOSSES",
    "EVALUATE_LOSS",
    "EVALUATE_LOSS_STREAM",
    "HEALTH_CHECK",
    "stream_requests",
    "async_stream_requests",
]

R = TypeVar("R")
Kind = Literal["unary_unary", "unary_stream", "stream_stream"]


def _serialize(request: message.Message | bytes) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


@dataclass(frozen=True)
class Method(Generic[R]):
    """One RPC: its path, how its reply bytes are read, its shape, and whether the
    client's default deadline applies (long training streams: no)."""

    path: str
    deserialize: Callable[[bytes], R]
    kind: Kind = "unary_unary"
    default_deadline: bool = True


LIST_LOSSES = Method("/lossd.v1.LossService/ListLosses", lossd_pb2.ListLossesResponse.FromString)
EVALUATE_LOSS = Method("/lossd.v1.LossService/EvaluateLoss", lossd_pb2.EvaluateLossResponse.FromString)
EVALUATE_LOSS_STREAM = Method(
    "/lossd.v1.LossService/EvaluateLossStream", lossd_pb2.EvaluateLossStreamResponse.FromString, "stream_stream"
)
#: grpc.health.v1 messages are hand-encoded (``_health.py``): the SDK needs no grpcio-health-checking.
HEALTH_CHECK = Method("/grpc.health.v1.Health/Check", bytes)


def stream_requests(requests: Iterable[lossd_pb2.EvaluateLossRequest]) -> Iterator[lossd_pb2.EvaluateLossStreamRequest]:
    """Wrap requests as stream items whose ``id`` is their index."""
    for i, r in enumerate(requests):
        yield lossd_pb2.EvaluateLossStreamRequest(id=str(i), request=r)


async def async_stream_requests(
    requests: AsyncIterable[lossd_pb2.EvaluateLossRequest],
) -> AsyncIterator[lossd_pb2.EvaluateLossStreamRequest]:
    """:func:`stream_requests` for an async iterable."""
    i = 0
    async for r in requests:
        yield lossd_pb2.EvaluateLossStreamRequest(id=str(i), request=r)
        i += 1


class ClientBase:
    """Settings, channel construction and per-call options shared by both clients.

    Every argument has a ``LOSSD_*`` environment variable (see
    :class:`~lossd.client.ClientConfig`); the argument wins. The channel opens
    on first use, so constructing a client never blocks and never fails for
    an unreachable server.
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
            target, timeout=timeout, token=token, token_file=token_file, tls=tls, ca_file=ca_file,
            cert_file=cert_file, key_file=key_file, server_name=server_name, compression=compression, keepalive_s=keepalive_s,
            max_message_bytes=max_message_bytes, max_attempts=max_attempts, load_balancing=load_balancing,
            options=options,
        )
        self._credentials = self.config.channel_credentials()  # reads the files now: errors show here
        self._channel: Any = None
        self._callables: dict[str, Any] = {}
        self._opening = threading.Lock()  # threads sharing a Client open one channel

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

    def _open(self, grpc_module: Any) -> Any:
        """The channel, opened on first use with ``grpc`` or ``grpc.aio`` (same signatures)."""
        with self._opening:
            if self._channel is None:
                kwargs = {"options": self.config.channel_options(), "compression": self.config.channel_compression()}
                if self._credentials is None:
                    self._channel = grpc_module.insecure_channel(self.config.target, **kwargs)
                else:
                    self._channel = grpc_module.secure_channel(self.config.target, self._credentials, **kwargs)
            return self._channel

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
