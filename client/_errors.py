"""Typed exceptions for gRPC status codes: one table, one converter.

>>> import grpc
>>> error_class(grpc.StatusCode.NOT_FOUND).__name__
'NotFound'
"""

from __future__ import annotations

import grpc

__all__ = [
    "LossdError",
    "InvalidArgument",
    "NotFound",
    "ResourceExhausted",
    "Unauthenticated",
    "PermissionDenied",
    "Unavailable",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Cancelled",
    "Unimplemented",
    "Internal",
    "error_class",
    "from_rpc_error",
    "from_status_name",
]


class LossdError(Exception):
    """Base of every error the SDK raises for a failed call.

    ``code`` is the gRPC status code, ``message`` the server's text, ``field``
    the request field at fault when known (streamed items carry it).
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(LossdError):
    """The request broke a rule; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(LossdError):
    """No such loss (or job); the message lists close names."""

    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(LossdError):
    """A size or concurrency limit was hit; the message names it."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(LossdError):
    """Missing or wrong credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LossdError):
    """Credentials were valid but not allowed to do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(LossdError):
    """The server could not be reached or is shutting down."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(LossdError):
    """The call took longer than its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class FailedPrecondition(LossdError):
    """The system is not in a state that allows the call."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Cancelled(LossdError):
    """The call was cancelled."""

    code = grpc.StatusCode.CANCELLED


class Unimplemented(LossdError):
    """The server cannot do this (e.g. a dtype torch does not support there)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(LossdError):
    """A server bug; the server log has details."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[LossdError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument, NotFound, ResourceExhausted, Unauthenticated, PermissionDenied,
        Unavailable, DeadlineExceeded, FailedPrecondition, Cancelled, Unimplemented, Internal,
    )
}


def error_class(code: grpc.StatusCode) -> type[LossdError]:
    """The exception class for ``code`` (``LossdError`` for codes without one)."""
    return _BY_CODE.get(code, LossdError)


def from_rpc_error(error: grpc.RpcError) -> LossdError:
    """Turn a ``grpc.RpcError`` into its typed exception; use ``raise ... from error``."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return error_class(code)(details or code.name, code)


def from_status_name(name: str, message: str, field: str = "") -> LossdError:
    """Exception for a status code given by name, as streamed items carry it."""
    code = grpc.StatusCode.__members__.get(name, grpc.StatusCode.UNKNOWN)
    return error_class(code)(message, code, field)
