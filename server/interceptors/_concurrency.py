"""Concurrency limits: a grpc.aio server interceptor on calls in flight, server-wide.

:class:`ConcurrencyLimiter` counts calls in flight across the server: unary
calls against ``max_concurrent_rpcs``, streaming calls (``EvaluateLossStream``,
``TrainJob``, ``WatchJob``) against ``max_concurrent_streams``. A call over
its limit ends ``RESOURCE_EXHAUSTED`` at once, with a message naming the
limit, its value and its flag; it takes no slot and runs no servicer code.
The health service is exempt, so probes are never starved by a busy server; its ``Watch`` streams,
which live as long as their caller likes, are capped at :data:`MAX_HEALTH_WATCHES` of their own.

HTTP/2 streams per connection and keepalive are gRPC server arguments:
:func:`lossd.server._connections.connection_options`.

>>> limiter = ConcurrencyLimiter(max_rpcs=1, max_streams=1)
>>> release = limiter.rpcs.acquire()
>>> limiter.rpcs.acquire() is None, limiter.rpcs.refusal()  # doctest: +NORMALIZE_WHITESPACE
(True, 'too many calls in flight: max_concurrent_rpcs is 1 (--max-concurrent-rpcs,
        LOSSD_MAX_CONCURRENT_RPCS); try again when calls finish, or raise the limit')
>>> release(); release(); limiter.rpcs.in_flight
0
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from ..._settings import env_name, flag_name
from .._security import ConfigError
from ._chain import StageInterceptor
from ._handlers import Context, Handler, is_open, shape_of, streams_requests

__all__ = ["MAX_HEALTH_WATCHES", "ConcurrencyLimiter", "Slots"]

#: Health ``Watch`` streams open at once, server-wide. Health is open (no token) and exempt from the limits
#: above, and an open Watch holds about 23 KB: 3,732 from a caller without the token took 87 MB (an audit,
#: 2026-12-06). Probes (Kubernetes, load balancers, ``lossd health``) use ``Check``, which stays unlimited.
MAX_HEALTH_WATCHES = 1024
_WATCH = "/grpc.health.v1.Health/Watch"


@dataclass
class Slots:
    """One limit: how many calls of a kind may be in flight, and how many are."""

    setting: str
    limit: int
    what: str
    in_flight: int = 0
    refused: int = 0
    #: What to do instead, for a limit that is not a setting (its refusal then names no flag).
    instead: str = ""

    def acquire(self) -> Callable[[], None] | None:
        """Take a slot: its release function (idempotent), or None when all are taken."""
        if self.in_flight >= self.limit:
            self.refused += 1
            return None
        self.in_flight += 1
        held = [True]

        def release() -> None:
            if held:
                held.clear()
                self.in_flight -= 1
        return release

    def refusal(self) -> str:
        """The RESOURCE_EXHAUSTED message: the limit, its value, its flag and variable."""
        if self.instead:
            return f"too many {self.what} in flight: at most {self.limit}; {self.instead}"
        return (f"too many {self.what} in flight: {self.setting} is {self.limit} "
                f"({flag_name(self.setting)}, {env_name(self.setting)}); try again when calls finish, "
                "or raise the limit")


class ConcurrencyLimiter(StageInterceptor):
    """Server-wide limits on unary calls and on streaming calls in flight; health is exempt."""

    def __init__(self, max_rpcs: int, max_streams: int) -> None:
        for name, value in (("max_concurrent_rpcs", max_rpcs), ("max_concurrent_streams", max_streams)):
            if value < 1:
                raise ConfigError(f"{name}: must be >= 1, got {value}")
        self.rpcs = Slots("max_concurrent_rpcs", max_rpcs, "calls")
        self.streams = Slots("max_concurrent_streams", max_streams, "streams")
        #: Open health Watch streams (:data:`MAX_HEALTH_WATCHES`), the one open method that stays open.
        self.watches = Slots("", MAX_HEALTH_WATCHES, "health Watch streams",
                             instead="probe with Check, or close a Watch")

    def wrap(self, handler: Handler, method: str) -> Handler:
        """``handler`` holding a slot while it runs (exempt methods: as it is)."""
        if is_open(method):
            return _limited(handler, self.watches) if method == _WATCH else handler
        streaming = streams_requests(handler, method) or handler.response_streaming
        return _limited(handler, self.streams if streaming else self.rpcs)


def _limited(handler: Handler, slots: Slots) -> Handler:
    """``handler`` holding one of ``slots`` for the duration of each call."""
    shape = shape_of(handler)
    if shape is None:
        return handler
    behavior = shape.behavior

    def take(context: Context, when_done: bool) -> Callable[[], None] | None:
        release = slots.acquire()
        if release is not None and when_done:  # also released when the call ends any other way
            # grpc's stubs type the callback as a class, not a Protocol: no function matches it.
            context.add_done_callback(lambda _context: release())  # type: ignore[arg-type]
        return release

    if shape.is_gen:
        async def limited_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            release = take(context, True)  # a stream's generator may be left unclosed: its call's end releases too
            if release is None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, slots.refusal())
                return
            replies = behavior(request, context)
            try:
                async for reply in replies:
                    yield reply
            finally:
                release()
                await replies.aclose()
        return shape.rebuild(limited_stream)

    async def limited(request: Any, context: Context) -> Any:
        release = take(context, False)  # the finally below releases on every way out, cancellation included
        if release is None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, slots.refusal())
        try:
            return await behavior(request, context)
        finally:
            release()
    return shape.rebuild(limited)
