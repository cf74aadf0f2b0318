"""Every RPC lossd serves, read from the contract's descriptors: one table, no path literals.

The SDK's calls (``client/_calls.py``, ``client/_training.py``), its retry policy
(``client/_config.py``), the server's metric labels (the observability
interceptor) and the generated docs all read this module. Each fact comes from
the ``.proto`` files: the path and the kind from the ``rpc`` line, idempotency
from ``option idempotency_level``. Two rules are derived here, once:

- ``retried``: gRPC retries a call that failed ``UNAVAILABLE`` when the method is
  idempotent and takes one request message. A request stream is not retried:
  gRPC replays it only until the first reply (or 256 KiB of requests), so a retry
  policy would promise what a long pipeline cannot get; the SDK raises
  ``Unavailable`` and the caller reopens the stream.
- ``default_deadline``: the client's default timeout applies to every method but
  the server streams (``TrainJob``, ``WatchJob``), which follow a job for as long
  as it runs.

``grpc.health.v1.Health/Check`` is listed too (:data:`HEALTH_CHECK`): the SDK
calls it with hand-encoded messages and retries it, but its descriptor is not
part of lossd's contract.

>>> EVALUATE_LOSS.path, EVALUATE_LOSS.kind, EVALUATE_LOSS.idempotent, EVALUATE_LOSS.retried
('/lossd.v1.LossService/EvaluateLoss', 'unary_unary', True, True)
>>> EVALUATE_LOSS_STREAM.grpc_type, EVALUATE_LOSS_STREAM.retried, TRAIN_JOB.default_deadline
('bidi_stream', False, False)
>>> BY_PATH["/lossd.v1.TrainingService/CancelJob"].idempotent
False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from google.protobuf import descriptor, descriptor_pb2

from .v1 import lossd_pb2, training_pb2

__all__ = [
    "Kind",
    "Rpc",
    "METHODS",
    "BY_PATH",
    "SERVICES",
    "REQUEST_TYPES",
    "LIST_LOSSES",
    "EVALUATE_LOSS",
    "EVALUATE_LOSS_STREAM",
    "EVALUATE_LOSS_BATCH",
    "TRAIN_JOB",
    "WATCH_JOB",
    "GET_JOB",
    "LIST_JOBS",
    "CANCEL_JOB",
    "DELETE_JOB",
    "HEALTH_CHECK",
    "from_descriptor",
]

#: A method's shape, named as a ``grpc.Channel`` names its multi-callables.
Kind = Literal["unary_unary", "unary_stream", "stream_unary", "stream_stream"]

#: The same shapes as gRPC's metric label ``grpc_type`` names them.
_GRPC_TYPES = {
    "unary_unary": "unary", "unary_stream": "server_stream",
    "stream_unary": "client_stream", "stream_stream": "bidi_stream",
}

_UNKNOWN = descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN


@dataclass(frozen=True)
class Rpc:
    """One method: who serves it, its shape, and whether repeating it is harmless.

    >>> HEALTH_CHECK.service, HEALTH_CHECK.name, HEALTH_CHECK.grpc_type
    ('grpc.health.v1.Health', 'Check', 'unary')
    """

    service: str  #: full service name, ``lossd.v1.LossService``
    name: str  #: method name, ``EvaluateLoss``
    kind: Kind
    idempotent: bool  #: the contract marks it ``NO_SIDE_EFFECTS`` or ``IDEMPOTENT``

    @property
    def path(self) -> str:
        """The HTTP/2 path gRPC sends: ``/lossd.v1.LossService/EvaluateLoss``."""
        return f"/{self.service}/{self.name}"

    @property
    def grpc_type(self) -> str:
        """``unary``, ``server_stream``, ``client_stream`` or ``bidi_stream`` (metric labels)."""
        return _GRPC_TYPES[self.kind]

    @property
    def retried(self) -> bool:
        """gRPC retries it on ``UNAVAILABLE``: idempotent and one request message."""
        return self.idempotent and self.kind.startswith("unary_")

    @property
    def default_deadline(self) -> bool:
        """The client's default timeout applies (every method but the server streams)."""
        return self.kind != "unary_stream"


def from_descriptor(method: descriptor.MethodDescriptor) -> Rpc:
    """The :class:`Rpc` a method descriptor describes.

    >>> from_descriptor(lossd_pb2.DESCRIPTOR.services_by_name["LossService"].methods_by_name["ListLosses"])
    Rpc(service='lossd.v1.LossService', name='ListLosses', kind='unary_unary', idempotent=True)
    """
    kind: Kind
    if method.client_streaming:
        kind = "stream_stream" if method.server_streaming else "stream_unary"
    else:
        kind = "unary_stream" if method.server_streaming else "unary_unary"
    level = method.GetOptions().idempotency_level
    return Rpc(method.containing_service.full_name, method.name, kind, level != _UNKNOWN)


#: lossd's services, in the order the contract declares them.
SERVICES: tuple[descriptor.ServiceDescriptor, ...] = (
    *lossd_pb2.DESCRIPTOR.services_by_name.values(),
    *training_pb2.DESCRIPTOR.services_by_name.values(),
)

#: Every method of :data:`SERVICES`, in declaration order.
METHODS: tuple[Rpc, ...] = tuple(from_descriptor(m) for s in SERVICES for m in s.methods)

#: The request message of each method of :data:`SERVICES`, by path.
REQUEST_TYPES: dict[str, descriptor.Descriptor] = {
    f"/{s.full_name}/{m.name}": m.input_type for s in SERVICES for m in s.methods
}

#: The standard health check (the SDK's ``health()``): not in lossd's descriptors.
HEALTH_CHECK = Rpc("grpc.health.v1.Health", "Check", "unary_unary", idempotent=True)

#: Every method the SDK can call, by path: :data:`METHODS` and :data:`HEALTH_CHECK`.
BY_PATH: dict[str, Rpc] = {m.path: m for m in (*METHODS, HEALTH_CHECK)}


def _method(service: descriptor.ServiceDescriptor, name: str) -> Rpc:
    return BY_PATH[f"/{service.full_name}/{service.methods_by_name[name].name}"]


_LOSS = lossd_pb2.DESCRIPTOR.services_by_name["LossService"]
_TRAINING = training_pb2.DESCRIPTOR.services_by_name["TrainingService"]

LIST_LOSSES = _method(_LOSS, "ListLosses")
EVALUATE_LOSS = _method(_LOSS, "EvaluateLoss")
EVALUATE_LOSS_STREAM = _method(_LOSS, "EvaluateLossStream")
EVALUATE_LOSS_BATCH = _method(_LOSS, "EvaluateLossBatch")
TRAIN_JOB = _method(_TRAINING, "TrainJob")
WATCH_JOB = _method(_TRAINING, "WatchJob")
GET_JOB = _method(_TRAINING, "GetJob")
LIST_JOBS = _method(_TRAINING, "ListJobs")
CANCEL_JOB = _method(_TRAINING, "CancelJob")
DELETE_JOB = _method(_TRAINING, "DeleteJob")
