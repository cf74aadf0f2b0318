"""The lossd client SDK: evaluate PyTorch losses on a lossd server.

Importing it does not import torch (``lossd.client.torch`` has ``RemoteLoss``,
for torch users)::

    >>> from lossd.client import Client
    >>> c = Client("127.0.0.1:50051")  # connects lazily
    >>> c.close()

The guide with an example for every name is ``docs/sdk.md``.
"""

from ._aio import AsyncClient
from ._client import Client, EvaluateResult, build_request
from ._codec import decode, encode
from ._config import DEFAULT_TARGET, DEFAULT_TIMEOUT, ClientConfig
from ._errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
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
from ._training import Progress, TrainResult, load_spec
from ._warnings import ServerWarning

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "Client",
    "AsyncClient",
    "ClientConfig",
    "EvaluateResult",
    "ServerWarning",
    "TrainResult",
    "Progress",
    "load_spec",
    "build_request",
    "decode",
    "encode",
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
]
