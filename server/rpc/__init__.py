"""The RPC layer: protobuf in, protobuf out, around the evaluation layer.

The tensor codec (``Tensor`` message ⇄ torch, :mod:`._tensors`), request handling
(``EvaluateLossRequest`` → serialized reply, :mod:`._request`), the grpc.aio
servicer ``LossService`` (:mod:`._service`) and the mapping of a refused field to
a gRPC status (:mod:`._status`)::

    >>> from lossd.v1 import lossd_pb2
    >>> decode_tensor(lossd_pb2.Tensor(dtype="int64", shape=[2], values=[0, 2]), "inputs.target")[0].tolist()
    [0, 2]
"""

from __future__ import annotations

from ._batch import (
    BatchControl,
    batch_reply,
    check_batch,
    evaluate_batch,
    payload_bytes,
)
from ._batching import DynamicBatcher
from ._request import FRAME_FROM_BYTES, handle_evaluate, handle_evaluate_bytes, struct_to_dict
from ._service import (
    INLINE_MAX_BYTES,
    INLINE_MAX_ENTRIES,
    LossService,
    ReceivedRequest,
    add_loss_service,
    describe_loss,
)
from ._status import clip, rich_status
from ._tensors import check_finite, decode_tensor, decode_tensors, encode_tensor, tensor_parts

__all__ = [
    "FRAME_FROM_BYTES",
    "BatchControl",
    "DynamicBatcher",
    "batch_reply",
    "check_batch",
    "evaluate_batch",
    "INLINE_MAX_BYTES",
    "INLINE_MAX_ENTRIES",
    "LossService",
    "ReceivedRequest",
    "add_loss_service",
    "check_finite",
    "clip",
    "decode_tensor",
    "decode_tensors",
    "describe_loss",
    "encode_tensor",
    "handle_evaluate",
    "handle_evaluate_bytes",
    "payload_bytes",
    "rich_status",
    "struct_to_dict",
    "tensor_parts",
]
