"""Request errors as gRPC's rich status: the code, the message, and a ``google.rpc.BadRequest``.

The message stays ``"field: what is wrong"`` for people (grpcurl prints it);
the ``BadRequest`` field violation carries the same field for programs (the
SDK's ``err.field`` / ``err.violations``), in the ``grpc-status-details-bin``
trailer that grpcio-status reads and writes.

>>> from .losses import LossError
>>> status = rich_status(LossError("params.margin", "must be positive"))
>>> status.code.name, status.details, status.trailing_metadata[0][0]
('INVALID_ARGUMENT', 'params.margin: must be positive', 'grpc-status-details-bin')
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from .losses import LossError

__all__ = ["rich_status"]


def rich_status(error: LossError) -> grpc.Status:
    """The status to abort with for ``error``; a ``BadRequest`` detail names its field, when it has one."""
    code = grpc.StatusCode[error.code]
    status = status_pb2.Status(code=code.value[0], message=str(error))
    if error.field:
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return rpc_status.to_status(status)
