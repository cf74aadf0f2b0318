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
exactly as the interceptors nested one in another did. A refused call to a
method the server does not serve is wrapped as :data:`UNKNOWN_METHOD`: the
path is the client's to choose, and stages keep things per method
(observability's metric labels), which must not grow with made-up paths.
What the stages make is :func:`~._handlers.ending_cleanly`: an aborted call
holds none of its frames once it ends.

A plain ``grpc.aio.ServerInterceptor`` (no ``admit``/``wrap``) may sit among the
stages too: it is run per call, as gRPC would run it, around what the stages
inside it made (those are still built once per method). It works, but costs its
own per-call wrapping: make it a :class:`StageInterceptor` to have it built once.

>>> from ._drain import DrainGate
>>> chain = InterceptorChain([DrainGate()])
>>> [type(s).__name__ for s in chain.stages]
['DrainGate']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import grpc

from ._handlers import Continuation, Handler, as_unary, ending_cleanly, read_to_end, refusing_handler

__all__ = ["UNKNOWN_METHOD", "InterceptorChain", "Refusal", "Stage", "StageInterceptor"]

#: A call refused at admission: its status code and message.
Refusal = tuple[grpc.StatusCode, str]

#: The method the stages are given for a refused call to a method the server does not serve (its
#: metric labels: service and method ``unknown``), whatever path the client sent.
UNKNOWN_METHOD = "/unknown/unknown"


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

    def __init__(self, stages: Sequence[Stage | grpc.aio.ServerInterceptor]) -> None:
        self.stages = tuple(stages)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}
        #: The stages inside the innermost plain interceptor (all of them when there is none): their
        #: wrapping is built once per method; the plain ones and those outside them run per call.
        plain = [i for i, stage in enumerate(self.stages) if not _is_stage(stage)]
        self._cut = plain[-1] + 1 if plain else 0
        #: Each stage's admission check (None for a plain interceptor), looked up once.
        self._admits = tuple(stage.admit if isinstance(stage, _StageLike) else None for stage in self.stages)

    def __repr__(self) -> str:
        return f"InterceptorChain({', '.join(type(s).__name__ for s in self.stages)})"

    async def _wrap(self, handler: Handler | None, details: grpc.HandlerCallDetails, stages: Sequence[Any],
                    method: str | None = None, clean: bool = False) -> Handler | None:
        """``handler`` wrapped by ``stages``; ``clean``: what the stages made is :func:`ending_cleanly` (before any
        plain interceptor among them, which gets it as it would from gRPC)."""
        method = str(details.method) if method is None else method
        if handler is not None and read_to_end(handler, method) and all(_is_stage(s) for s in stages):
            # A unary method served as client-streaming (EvaluateLoss): the stages wrap it as unary.
            handler = as_unary(handler, lambda unary: self._wrap_stages(unary, method, stages))
            return ending_cleanly(handler) if clean else handler
        for stage in reversed(stages):  # innermost first: the outermost stage wraps last
            if not _is_stage(stage):
                if clean and handler is not None:
                    handler, clean = ending_cleanly(handler), False
                handler = await stage.intercept_service(_returning(handler), details)
            elif handler is not None:
                handler = stage.wrap(handler, method)
        return ending_cleanly(handler) if clean and handler is not None else handler

    @staticmethod
    def _wrap_stages(handler: Handler, method: str, stages: Sequence[Any]) -> Handler:
        for stage in reversed(stages):
            handler = stage.wrap(handler, method)
        return handler

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        for i, admit in enumerate(self._admits):
            refusal = admit(handler_call_details) if admit is not None else None
            if refusal is not None:
                method = str(handler_call_details.method) if handler is not None else UNKNOWN_METHOD
                return await self._wrap(refusing_handler(handler, *refusal), handler_call_details, self.stages[:i],
                                        method, clean=True)
        if handler is None:
            return await self._wrap(None, handler_call_details, self.stages[:self._cut])
        method = str(handler_call_details.method)
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            wrapped = cached[1]
        else:
            inner = await self._wrap(handler, handler_call_details, self.stages[self._cut:], clean=True)
            assert inner is not None  # stages wrap a handler into a handler
            wrapped = inner
            self._wrapped[method] = (handler, wrapped)
        if not self._cut:
            return wrapped
        return await self._wrap(wrapped, handler_call_details, self.stages[:self._cut])


@runtime_checkable
class _StageLike(Protocol):
    def admit(self, details: grpc.HandlerCallDetails) -> Refusal | None: ...

    def wrap(self, handler: Handler, method: str) -> Handler: ...


def _is_stage(stage: object) -> bool:
    return isinstance(stage, _StageLike)


def _returning(handler: Handler | None) -> Continuation:
    async def continuation(details: grpc.HandlerCallDetails) -> Handler | None:
        return handler
    return continuation
