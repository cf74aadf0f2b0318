"""Typed exceptions for gRPC status codes: one table, one converter.

Every failed call raises a subclass of :class:`LossdError` chosen by its status
code. When the server attaches a ``google.rpc.Status`` with a
``google.rpc.BadRequest`` (lossd does for every request error), the fields at
fault are in ``violations`` and the first one in ``field``::

    >>> import grpc
    >>> error_class(grpc.StatusCode.NOT_FOUND).__name__
    'NotFound'
    >>> err = from_status_name("INVALID_ARGUMENT", "params.reduction: must be one of mean, sum, none",
    ...                        "params.reduction")
    >>> type(err).__name__, err.field, err.violations[0].description
    ('InvalidArgument', 'params.reduction', 'must be one of mean, sum, none')
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, message
from google.rpc.error_details_pb2 import (
    BadRequest,
    DebugInfo,
    ErrorInfo,
    Help,
    LocalizedMessage,
    PreconditionFailure,
    QuotaFailure,
    RequestInfo,
    ResourceInfo,
    RetryInfo,
)
from google.rpc.status_pb2 import Status

from .._wire import explain_message_limit

__all__ = [
    "LossdError",
    "FieldViolation",
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
    "raising_lossd_errors",
    "STATUS_DETAILS_KEY",
]

#: Trailing-metadata key of a serialized ``google.rpc.Status`` (the gRPC rich error model).
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One request field at fault and what is wrong with it (``google.rpc.BadRequest``).

    >>> FieldViolation("inputs.target", "class indices must lie in [0, 3)")
    FieldViolation(field='inputs.target', description='class indices must lie in [0, 3)')
    """

    field: str
    description: str


class LossdError(Exception):
    """Base of every error the SDK raises for a failed call.

    ``code`` is the gRPC status code, ``message`` the server's text,
    ``details`` the decoded ``google.rpc`` detail messages the server attached
    (``BadRequest``, ``ErrorInfo``, ...), ``violations`` the fields at fault
    (from ``BadRequest``, or a streamed item's error) and ``field`` the first
    of them (``""`` when unknown). ``item`` is the index of the failed request
    in :meth:`~lossd.client.Client.evaluate_stream`, else ``None``.

    >>> try:
    ...     raise InvalidArgument("params.margin: must be positive",
    ...                           violations=[FieldViolation("params.margin", "must be positive")])
    ... except LossdError as e:
    ...     print(e.code.name, e.field, "|", e)
    INVALID_ARGUMENT params.margin | INVALID_ARGUMENT: params.margin: must be positive
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        field: str = "",
        *,
        details: Sequence[message.Message] = (),
        violations: Sequence[FieldViolation] = (),
        item: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)
        self.violations = list(violations)
        self.field = field or (self.violations[0].field if self.violations else "")
        self.item = item
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(LossdError):
    """The request broke a rule; ``field`` and the message name the field at fault."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(LossdError):
    """No such loss (or job); the message lists close names."""

    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(LossdError):
    """A size or concurrency limit was hit; the message names it."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(LossdError):
    """Missing or wrong credentials (token, client certificate)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LossdError):
    """Credentials were valid but not allowed to do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(LossdError):
    """The server could not be reached or is shutting down (idempotent calls were retried first)."""

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
    """The server cannot do this (e.g. a dtype torch does not support there, or an unknown method)."""

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

#: google.rpc detail messages the SDK decodes, by full name.
_DETAIL_TYPES: dict[str, type[message.Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        BadRequest, ErrorInfo, RetryInfo, DebugInfo, QuotaFailure, PreconditionFailure, RequestInfo,
        ResourceInfo, Help, LocalizedMessage,
    )
}


def error_class(code: grpc.StatusCode) -> type[LossdError]:
    """The exception class for ``code`` (``LossdError`` for codes without one)."""
    return _BY_CODE.get(code, LossdError)


def _unpack(detail: any_pb2.Any) -> message.Message:
    """A detail as its google.rpc message when the SDK knows the type, else the ``Any`` itself."""
    cls = _DETAIL_TYPES.get(detail.TypeName())
    if cls is None:
        return detail
    decoded = cls()
    return decoded if detail.Unpack(decoded) else detail


def _rich_details(metadata: Any) -> list[message.Message]:
    """The detail messages of a ``google.rpc.Status`` in trailing metadata; ``[]`` if none or unreadable."""
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                status = Status.FromString(value)
            except message.DecodeError:
                return []
            return [_unpack(d) for d in status.details]
    return []


def _violations(details: Sequence[message.Message]) -> list[FieldViolation]:
    return [
        FieldViolation(v.field, v.description)
        for d in details if isinstance(d, BadRequest)
        for v in d.field_violations
    ]


def from_rpc_error(error: grpc.RpcError) -> LossdError:
    """Turn a ``grpc.RpcError`` (sync or ``grpc.aio``) into its typed exception.

    Use it as ``raise from_rpc_error(e) from e``; :func:`raising_lossd_errors`
    does that for a block.
    """
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    text = error.details() if hasattr(error, "details") else str(error)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and text:
        text = explain_message_limit(text)  # gRPC's own size errors: say which limit to raise
    details = _rich_details(error.trailing_metadata() if hasattr(error, "trailing_metadata") else None)
    return error_class(code)(text or code.name, code, details=details, violations=_violations(details))


def from_status_name(name: str, message: str, field: str = "", item: int | None = None) -> LossdError:
    """Exception for a status code given by name, as a streamed item's ``Error`` carries it.

    The server's message reads ``"field: description"``; the violation keeps the description.
    """
    code = grpc.StatusCode.__members__.get(name, grpc.StatusCode.UNKNOWN)
    violations = [FieldViolation(field, message.removeprefix(f"{field}: "))] if field else []
    return error_class(code)(message, code, violations=violations, item=item)


@contextlib.contextmanager
def raising_lossd_errors() -> Iterator[None]:
    """Within the block, a ``grpc.RpcError`` is re-raised as its :class:`LossdError` subclass.

    Works around ``await`` too (the sync and async clients share it).

    >>> with raising_lossd_errors():
    ...     pass
    """
    try:
        yield
    except grpc.RpcError as e:
        raise from_rpc_error(e) from e
