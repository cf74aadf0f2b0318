"""Bearer-token authentication: a grpc.aio server interceptor on every RPC.

Every call — unary or streaming, LossService, TrainingService, reflection,
unknown methods — must carry ``authorization: Bearer <token>``; the health
service (``/grpc.health.v1.Health/``) stays open for load balancers and
probes. A refused call ends ``UNAUTHENTICATED`` with a message saying which
metadata is expected; it never echoes what was sent. The token is compared
as SHA-256 digests with :func:`hmac.compare_digest`: constant time, and its
length does not leak either.

A refused call gets a handler that parses nothing (``refusing_handler``): its
request bytes are not deserialized and no servicer code runs.

>>> from types import SimpleNamespace as Details
>>> gate = BearerTokenInterceptor(b"0123456789abcdef")
>>> gate.problem([("authorization", "Bearer 0123456789abcdef")]) is None
True
>>> gate.problem([("authorization", "Bearer wrong")])
'the bearer token is not valid (metadata `authorization: Bearer <token>`)'
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

import grpc

from ._handlers import OPEN_PREFIXES, Continuation, Handler, is_open, refusing_handler

__all__ = ["BearerTokenInterceptor"]

_EXPECTED = ("this server wants the metadata `authorization: Bearer <token>` (SDK and lossd command: "
             "LOSSD_TOKEN or LOSSD_TOKEN_FILE, token=/token_file=, --token-file; "
             "grpcurl -H 'authorization: Bearer ...')")


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuse (``UNAUTHENTICATED``) every call without the right bearer token, but
    those whose method starts with one of ``open_prefixes``."""

    def __init__(self, token: bytes, open_prefixes: tuple[str, ...] = OPEN_PREFIXES) -> None:
        self._digest = _digest(token)
        self._open = open_prefixes
        #: Calls refused so far (for tests and logs; never what they sent).
        self.refused = 0

    def __repr__(self) -> str:
        return f"BearerTokenInterceptor(open_prefixes={self._open!r})"

    def problem(self, metadata: Iterable[tuple[str, Any]] | None) -> str | None:
        """Why a call with ``metadata`` is refused, or None when its token is right."""
        values = [v for k, v in metadata or () if k == "authorization"]
        if not values:
            return f"missing credentials: {_EXPECTED}"
        value = values[0]
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        scheme, _, credential = str(value).strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return f"the authorization metadata is not a bearer token: {_EXPECTED}"
        if not hmac.compare_digest(_digest(credential.strip().encode("utf-8", "replace")), self._digest):
            return "the bearer token is not valid (metadata `authorization: Bearer <token>`)"
        return None

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        if is_open(handler_call_details.method, self._open):
            return await continuation(handler_call_details)
        problem = self.problem(handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        if problem is None:
            return handler
        self.refused += 1
        return refusing_handler(handler, grpc.StatusCode.UNAUTHENTICATED, problem)
