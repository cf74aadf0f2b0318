"""Graceful drain: a grpc.aio server interceptor that counts the calls in flight and, once the
server starts shutting down, refuses new ones.

``lossd serve`` installs a :class:`DrainGate` (:func:`lossd.server.interceptors.build_interceptors`
gives the order). On SIGTERM (or SIGINT) :meth:`lossd.server.LossdServer.drain` closes the gate,
turns health ``NOT_SERVING``, lets running training jobs checkpoint, then waits
(:meth:`DrainGate.wait_idle`) until the calls already running have finished — at most the
grace period — while the listener stays open: health checks keep answering (``NOT_SERVING``),
server reflection is neither waited for nor refused (a client holds its stream open, idle), and
every other new call ends at once with ``UNAVAILABLE`` and a message saying so (a client
with several targets retries elsewhere). Only then does the server stop. A refused call's
request is not parsed.

>>> import asyncio
>>> gate = DrainGate()
>>> gate.draining, gate.in_flight
(False, 0)
>>> gate.close()
>>> gate.draining, asyncio.run(gate.wait_idle(0.1))
(True, True)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from ._chain import Refusal, StageInterceptor
from ._handlers import UNDRAINED_PREFIXES, Context, Handler, is_open, shape_of

__all__ = ["DRAINING_MESSAGE", "DrainGate"]

#: What a call refused during the drain is told.
DRAINING_MESSAGE = ("the server is shutting down and takes no new calls; retry on another server "
                    "or after it restarts (health reports NOT_SERVING)")

class DrainGate(StageInterceptor):
    """Counts calls in flight (health and reflection aside: ``UNDRAINED_PREFIXES``); after :meth:`close`,
    refuses new calls with ``UNAVAILABLE`` but those whose method starts with one of ``open_prefixes``."""

    def __init__(self, open_prefixes: tuple[str, ...] = UNDRAINED_PREFIXES) -> None:
        self._open = open_prefixes
        self._in_flight = 0
        self._changed: asyncio.Event | None = None  # made on the server's loop when first needed
        self.draining = False
        #: Calls refused because the server was draining.
        self.refused = 0

    @property
    def in_flight(self) -> int:
        """Calls running now (health and reflection calls not counted)."""
        return self._in_flight

    def close(self) -> None:
        """Refuse every new call from now on (health and reflection aside)."""
        self.draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no counted call runs; False if some still do after ``timeout`` seconds."""
        deadline = time.monotonic() + max(0.0, timeout)
        while self._in_flight:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            changed = self._event()
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), left)
            except asyncio.TimeoutError:
                return not self._in_flight
        return True

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _enter(self) -> None:
        self._in_flight += 1

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._changed is not None:
            self._changed.set()

    def admit(self, details: grpc.HandlerCallDetails) -> Refusal | None:
        """``UNAVAILABLE`` once draining (open methods aside)."""
        if self.draining and not is_open(details.method, self._open):
            self.refused += 1
            return grpc.StatusCode.UNAVAILABLE, DRAINING_MESSAGE
        return None

    def wrap(self, handler: Handler, method: str) -> Handler:
        """``handler`` counted in flight (open methods are not)."""
        return handler if is_open(method, self._open) else self._counted(handler)

    def _counted(self, handler: Handler) -> Handler:
        """``handler`` with its behavior counted from its start to its end (however it ends)."""
        shape = shape_of(handler)
        if shape is None:
            return handler
        behavior, enter, leave = shape.behavior, self._enter, self._leave
        if shape.is_gen:
            async def counted_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                enter()
                replies = behavior(request, context)
                try:
                    async for reply in replies:
                        yield reply
                finally:
                    leave()
                    await replies.aclose()
            return shape.rebuild(counted_stream)

        async def counted(request: Any, context: Context) -> Any:
            enter()
            try:
                return await behavior(request, context)
            finally:
                leave()
        return shape.rebuild(counted)
