"""The server's grpc.aio interceptors, one module each, and :func:`build_interceptors`, the
one place that fixes their order.

Outermost first (each sees only the calls the ones before it let through):

0. large requests (:mod:`._large_requests`): a request over 64 KiB is parsed off the event loop,
   and every request's strings and repeated fields are checked against their caps
   (:mod:`lossd.server.rpc._caps`) before anything else reads it; first, because gRPC parses a
   request before any interceptor's behavior runs.
1. observability (:mod:`._observability`): metrics and access logs; first, so that it sees
   every call, refused ones included. Installed only with metrics or JSON logs on.
2. the drain gate (:mod:`._drain`): counts calls in flight; refuses new ones ``UNAVAILABLE``
   once the server drains.
3. bearer-token authentication (:mod:`._auth`), only with a token: ``UNAUTHENTICATED`` before
   any other work, so an unauthenticated call takes no concurrency slot.
4. concurrency limits (:mod:`._concurrency`): ``RESOURCE_EXHAUSTED`` past the limits.
5. malformed requests (:mod:`._malformed`), innermost: a request that does not parse is
   ``INVALID_ARGUMENT``, not gRPC's ``UNKNOWN``.

The health service passes 2–4 untouched. Every interceptor wraps handlers through
:mod:`._handlers`, the one place that knows a handler's four shapes.

The server installs them as one :class:`InterceptorChain` (:mod:`._chain`): one
``intercept_service`` per call, and each method's wrapped handler built once and reused
(each interceptor is a stage: a per-call ``admit`` and a per-method ``wrap``).

>>> gate, limiter = DrainGate(), ConcurrencyLimiter(max_rpcs=4, max_streams=2)
>>> [chain] = build_interceptors(gate, limiter, token=b"secret-token-1234")
>>> [type(stage).__name__ for stage in chain.stages]
['LargeRequests', 'DrainGate', 'BearerTokenInterceptor', 'ConcurrencyLimiter', 'MalformedRequests']
"""

from __future__ import annotations

import grpc

from ._auth import BearerTokenInterceptor
from ._chain import InterceptorChain, Stage, StageInterceptor
from ._concurrency import ConcurrencyLimiter, Slots
from ._drain import DRAINING_MESSAGE, DrainGate
from ._handlers import OPEN_PREFIXES, is_open, refusing_handler, shape_of
from ._large_requests import LargeRequests
from ._malformed import MalformedRequests
from ._observability import Observability, ObservabilityInterceptor, build_observability

__all__ = [
    "DRAINING_MESSAGE",
    "OPEN_PREFIXES",
    "BearerTokenInterceptor",
    "ConcurrencyLimiter",
    "DrainGate",
    "InterceptorChain",
    "LargeRequests",
    "MalformedRequests",
    "Observability",
    "ObservabilityInterceptor",
    "Slots",
    "Stage",
    "StageInterceptor",
    "build_interceptors",
    "build_observability",
    "is_open",
    "refusing_handler",
    "shape_of",
]


def build_interceptors(
    gate: DrainGate,
    limiter: ConcurrencyLimiter,
    *,
    token: bytes | None = None,
    observability: ObservabilityInterceptor | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The server's interceptors: one :class:`InterceptorChain` of the stages, outermost first, in
    the order the module docstring gives and explains; ``token`` adds authentication,
    ``observability`` metrics and access logs."""
    stages: list[Stage] = [LargeRequests()]
    if observability is not None:
        stages.append(observability)
    stages.append(gate)
    if token is not None:
        stages.append(BearerTokenInterceptor(token))
    stages.append(limiter)
    stages.append(MalformedRequests())
    return [InterceptorChain(stages)]
