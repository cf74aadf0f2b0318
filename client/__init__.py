"""The lossd client SDK: evaluate PyTorch losses on a lossd server.

Importing it does not import torch::

    >>> from lossd.client import Client
    >>> c = Client("127.0.0.1:50051")  # connects lazily
    >>> c.close()
"""

from ._client import DEFAULT_TARGET, Client, EvaluateResult, build_request
from ._codec import decode, encode
from ._errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    LossdError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)

__all__ = [
    "DEFAULT_TARGET",
    "Client",
    "EvaluateResult",
    "build_request",
    "decode",
    "encode",
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
]
