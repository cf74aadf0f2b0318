"""A test-only lossd server with gates in front: the real LossService and health service on a
``grpc.aio`` server built here, with server interceptors and optional TLS.

``lossd serve`` has no fault injection; the SDK's retries are tested against
this server (its TLS/mTLS and tokens also against the real server:
tests/integration/test_security.py):

- :class:`RefuseFirst` answers the first ``k`` calls of each method with a
  status (``UNAVAILABLE``) and counts every call the server sees, so a test can
  tell the channel's own retries from one attempt;
- :class:`RequireToken` refuses calls without ``authorization: Bearer <token>``.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from support.servers import serve_in_thread

__all__ = ["RefuseFirst", "RequireToken", "start_gated"]


def _aborting(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler shaped like ``handler`` (unary or streaming) that fails every call with ``code``."""

    async def abort(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def abort_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(  # type: ignore[no-any-return, operator]
        abort_stream if handler.response_streaming else abort,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class RefuseFirst(grpc.aio.ServerInterceptor):
    """Fail the first ``k`` calls of every method with ``code``; ``calls`` counts all calls by method."""

    def __init__(self, k: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.k = k
        self.code = code
        self.calls: Counter[str] = Counter()

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        self.calls[details.method] += 1
        handler = await continuation(details)
        if self.calls[details.method] <= self.k:
            return _aborting(handler, self.code, f"refused attempt {self.calls[details.method]} of {self.k}")
        return handler


class RequireToken(grpc.aio.ServerInterceptor):
    """Refuse (UNAUTHENTICATED) calls without ``authorization: Bearer <token>``; keeps what was sent."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.seen: list[dict[str, Any]] = []

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        metadata = dict(details.invocation_metadata or ())
        self.seen.append(metadata)
        handler = await continuation(details)
        if metadata.get("authorization") != f"Bearer {self.token}":
            return _aborting(handler, grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        return handler


@dataclass
class _Served:
    """A bare grpc.aio server and its port, started and closed as serve_in_thread expects."""

    grpc_server: grpc.aio.Server
    port: int

    async def start(self) -> None:
        await self.grpc_server.start()

    async def close(self) -> None:
        await self.grpc_server.stop(None)


@contextlib.contextmanager
def start_gated(
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> Iterator[str]:
    """Serve LossService + health on 127.0.0.1:<ephemeral> behind ``interceptors``; TLS when
    ``credentials`` are given. Yields the address."""
    import torch
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from lossd._wire import DEFAULT_MAX_TENSOR_ELEMENTS
    from lossd.server.rpc import LossService
    from lossd.server.losses import REGISTRY
    from lossd.v1 import lossd_pb2_grpc

    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gated-eval")

    async def build() -> _Served:
        server = grpc.aio.server(interceptors=list(interceptors))
        service = LossService(REGISTRY, executor, torch.device("cpu"), DEFAULT_MAX_TENSOR_ELEMENTS)
        lossd_pb2_grpc.add_LossServiceServicer_to_server(service, server)
        health_servicer = health.aio.HealthServicer()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        address = "127.0.0.1:0"
        port = (server.add_insecure_port(address) if credentials is None
                else server.add_secure_port(address, credentials))
        return _Served(server, port)

    try:
        with serve_in_thread(build) as port:
            yield f"127.0.0.1:{port}"
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
