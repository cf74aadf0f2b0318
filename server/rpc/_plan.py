"""Per-signature plans: what validating an EvaluateLoss request decided, kept for the next
request of the same signature.

Everything :func:`~lossd.server.rpc.handle_evaluate_bytes` checks before it computes depends
on the request's *signature* — loss, params, input names, dtypes, shapes and payload sizes,
``grad_inputs``, ``allow_non_finite``, ``output_encoding``, ``strict`` — and not on the tensors' values:
the wire rules and limits, the loss lookup, the Struct→dict conversion and coercion of the
params, the binding of input names, the gradient targets, the reply's encoding. A
:class:`Plan` records those decisions; :class:`Plans` keeps the most recent ones of a service
(least recently used out). A request whose signature has a plan is decoded straight from its
payloads and evaluated with the plan's binding; the per-value rule (NaN and infinity) still
runs on every call, and the results are the same tensors torch computes either way.

Only plain requests get plans: one loss (no ``terms``, ``parameters``, ``regularization`` or
``grad_output``) whose inputs are all ``raw`` and non-empty. The first request of a signature,
and every other request, takes the full path, which also raises every refusal.

>>> from lossd.v1 import lossd_pb2
>>> t = lossd_pb2.Tensor(dtype="float32", shape=[1], raw=bytes(4))
>>> signature(lossd_pb2.EvaluateLossRequest(loss="mse", inputs={"y_pred": t, "y_true": t}), None)
('mse', b'', (('y_pred', 'float32', (1,), 4), ('y_true', 'float32', (1,), 4)), (), False, 0, False)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

from ...v1 import lossd_pb2
from ..evaluation import Binding

__all__ = ["MAX_PLANS", "Plan", "PlanInput", "Plans", "signature"]

#: Plans a service keeps (least recently used out): a client's distinct signatures.
MAX_PLANS = 256
#: Signatures longer than this (serialized params, many inputs) are not planned.
_MAX_PARAMS_BYTES = 4096


@dataclass(frozen=True)
class PlanInput:
    """One input of a plan: where its payload is, and the tensor it becomes."""

    path: str  # "inputs.<sent name>"
    sent: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    #: The dtype binding converts it to (integer inputs become int64), or None.
    to: torch.dtype | None


@dataclass(frozen=True)
class Plan:
    """A validated signature: its inputs, its binding and the reply's encoding."""

    inputs: tuple[PlanInput, ...]
    binding: Binding
    encoding: str
    #: Warnings binding raised (torch's deprecation of size_average, say): each planned reply has them too.
    warnings: tuple[str, ...] = ()


Signature = tuple[Any, ...]


def signature(request: lossd_pb2.EvaluateLossRequest, payloads: dict[str, memoryview] | None) -> Signature | None:
    """The request's signature, or None when it is not planned (see the module docstring)."""
    if request.terms or request.parameters or request.HasField("regularization") or request.HasField("grad_output"):
        return None
    params = request.params.SerializeToString(deterministic=True) if request.HasField("params") else b""
    if len(params) > _MAX_PARAMS_BYTES:
        return None
    inputs = []
    for name, t in sorted(request.inputs.items()):
        raw = payloads.get(f"inputs.{name}") if payloads else None
        size = len(t.raw) if raw is None else raw.nbytes
        if not size or len(t.values):
            return None
        inputs.append((name, t.dtype, tuple(t.shape), size))
    return request.loss, params, tuple(inputs), tuple(request.grad_inputs), request.allow_non_finite, \
        request.output_encoding, request.strict


P = TypeVar("P")


class Plans(Generic[P]):
    """The most recent :data:`MAX_PLANS` plans of one service, by signature (least recently used out):
    :class:`Plan` s of EvaluateLoss requests, or the group plans of :mod:`._batch`.

    Used from the event loop and the worker threads alike: a lost race only builds a plan twice.
    """

    def __init__(self, size: int = MAX_PLANS) -> None:
        self._size = size
        self._plans: OrderedDict[Any, P] = OrderedDict()

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, key: Any) -> P | None:
        plan = self._plans.get(key)
        if plan is not None:
            try:
                self._plans.move_to_end(key)
            except KeyError:  # dropped by another thread meanwhile
                pass
        return plan

    def put(self, key: Any, plan: P) -> None:
        self._plans[key] = plan
        while len(self._plans) > self._size:
            try:
                self._plans.popitem(last=False)
            except KeyError:
                break
