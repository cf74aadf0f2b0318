"""All of lossd's server interceptors as one: :class:`InterceptorChain`.

gRPC runs each interceptor of a server on every call: an ``await`` of its
``intercept_service`` through a continuation, and (as written before) a new
handler made for the call. With five interceptors that was five awaits, five
handler objects and a dozen ``inspect`` calls per RPC (docs/performance.md has
the profile). :class:`InterceptorChain` is the only interceptor the server
installs. Each rule is a :class:`Stage` with two parts:

- ``admit(details)``: the per-call decision taken before any parsing (the
  drain gate and authentication refuse here; the others admit everything);
- ``wrap(handler, method)``: what the stage does around a method's handler
  (count, limit, observe, parse). It depends on the method only, so the chain
  builds the wrapped handler once per method and hands the same one to every
  later call.

Per call the chain costs one ``intercept_service``: the admission checks,
then a dictionary hit. A refused call gets a refusing handler wrapped by the
stages before the one that refused it (observability sees refused calls),
exactly as the interceptors nested one in another did.

>>> from ._drain import DrainGate
>>> chain = InterceptorChain([DrainGate()])
>>> [type(s).__name__ for s in chain.stages]
['DrainGate']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import grpc

from ._handlers import Continuation, Handler, refusing_handler

__all__ = ["InterceptorChain", "Refusal", "Stage", "StageInterceptor"]

#: A call refused at admission: its status code and message.
Refusal = tuple[grpc.StatusCode, str]


class Stage(Protocol):
    """One rule of the chain (see the module docstring)."""

    def admit(self, details: grpc.HandlerCallDetails) -> Refusal | None:
        """``None`` to let the call through, else its refusal; before the request is parsed."""
        ...

    def wrap(self, handler: Handler, method: str) -> Handler:
        """``handler`` (of ``method``) with this stage's work around it; the same for every call."""
        ...


class StageInterceptor(grpc.aio.ServerInterceptor):
    """A :class:`Stage` usable on its own as a grpc.aio interceptor (tests, other servers)."""

    def admit(self, details: grpc.HandlerCallDetails) -> Refusal | None:
        return None

    def wrap(self, handler: Handler, method: str) -> Handler:
        return handler

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        refusal = self.admit(handler_call_details)
        if refusal is not None:
            return refusing_handler(handler, *refusal)
        return self.wrap(handler, str(handler_call_details.method)) if handler is not None else None


class InterceptorChain(grpc.aio.ServerInterceptor):
    """``stages``, outermost first, as one interceptor whose wrapped handlers are built once per method."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def __repr__(self) -> str:
        return f"InterceptorChain({', '.join(type(s).__name__ for s in self.stages)})"

    def _wrap(self, handler: Handler, method: str, stages: Sequence[Stage]) -> Handler:
        for stage in reversed(stages):  # innermost first: the outermost stage wraps last
            handler = stage.wrap(handler, method)
        return handler

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        for i, stage in enumerate(self.stages):
            refusal = stage.admit(handler_call_details)
            if refusal is not None:
                return self._wrap(refusing_handler(handler, *refusal), method, self.stages[:i])
        if handler is None:
            return None
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method, self.stages)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
