"""Request errors as gRPC's rich status: the code, the message, and a ``google.rpc.BadRequest``.

The message stays ``"field: what is wrong"`` for people (grpcurl prints it);
the ``BadRequest`` field violation carries the same field for programs (the
SDK's ``err.field`` / ``err.violations``), in the ``grpc-status-details-bin``
trailer that grpcio-status reads and writes.

>>> from lossd._wire import FieldError
>>> status = rich_status(FieldError("params.margin", "must be positive"))
>>> status.code.name, status.details, status.trailing_metadata[0][0]
('INVALID_ARGUMENT', 'params.margin: must be positive', 'grpc-status-details-bin')
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..._wire import FieldError

__all__ = ["MAX_FIELD_BYTES", "MAX_MESSAGE_BYTES", "clip", "rich_status"]

#: A status travels in trailers, which gRPC peers cap (8 KiB soft, 16 KiB hard): the message goes
#: percent-encoded in ``grpc-message`` and again, with the field, in ``grpc-status-details-bin``.
#: Messages may echo what the client sent (a loss name, a map key), so they are clipped to fit.
MAX_MESSAGE_BYTES = 1024
MAX_FIELD_BYTES = 256


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, saying how much was left out.

    >>> clip("no loss named 'xxxxxxxxxxxxxxxxxxxx'", 24)
    "no loss named 'xxxxxxxxx... (12 more characters)"
    """
    data = text.encode()
    if len(data) <= limit:
        return text
    kept = data[:limit].decode(errors="ignore")
    return f"{kept}... ({len(text) - len(kept)} more characters)"


def rich_status(error: FieldError) -> grpc.Status:
    """The status to abort with for ``error``; a ``BadRequest`` detail names its field, when it has one.

    Message and field are clipped (:func:`clip`) so that the status always reaches the client.
    """
    code = grpc.StatusCode[error.code]
    field = clip(error.field, MAX_FIELD_BYTES)
    message = clip(error.message, MAX_MESSAGE_BYTES)
    status = status_pb2.Status(code=code.value[0], message=f"{field}: {message}" if field else message)
    if error.field:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return rpc_status.to_status(status)
