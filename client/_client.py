"""The synchronous SDK client.

>>> with Client("127.0.0.1:50051") as c:          # doctest: +SKIP
...     r = c.evaluate("cross_entropy", [[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]], [0, 2])
...     round(r.value, 4)
0.5493
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from .._wire import DEFAULT_MAX_MESSAGE_BYTES
from ..v1 import lossd_pb2, lossd_pb2_grpc
from ._codec import ArrayLike, decode, encode, is_torch_tensor
from ._errors import LossdError, from_rpc_error, from_status_name

__all__ = ["Client", "EvaluateResult", "build_request", "DEFAULT_TARGET"]

#: Where the SDK connects unless told otherwise (env ``LOSSD_TARGET``).
DEFAULT_TARGET = "127.0.0.1:50051"


@dataclass
class EvaluateResult:
    """One evaluation: ``value`` (float, or ``None`` for a non-scalar loss),
    ``loss`` (array) and ``grads`` (arrays by input name), as numpy arrays or
    torch tensors (when the inputs were torch tensors)."""

    value: float | None
    loss: Any
    grads: dict[str, Any]
    loss_name: str
    timing: dict[str, float] = field(default_factory=dict)
    #: Parts of a composite/regularized objective: each term, "loss", "l1", "l2".
    parts: dict[str, float] = field(default_factory=dict)
    #: Gradients of the objective for each sent parameter tensor.
    parameter_grads: dict[str, Any] = field(default_factory=dict)
    #: Parameters the regularization covered.
    regularized: list[str] = field(default_factory=list)

    @classmethod
    def from_response(cls, reply: lossd_pb2.EvaluateLossResponse, as_torch: bool = False) -> EvaluateResult:
        """Decode a reply message."""
        return cls(
            value=reply.value if reply.HasField("value") else None,
            loss=decode(reply.loss, as_torch),
            grads={k: decode(v, as_torch) for k, v in reply.grads.items()},
            loss_name=reply.loss_name,
            timing=json_format.MessageToDict(reply.timing, preserving_proto_field_name=True),
            parts=dict(reply.parts),
            parameter_grads={k: decode(v, as_torch) for k, v in reply.parameter_grads.items()},
            regularized=list(reply.regularized),
        )


#: A loss name, or the terms of a composite objective: ``[{"loss": "bce", "weight": 0.5}, ...]``.
LossSpecifier = str | Sequence[Mapping[str, Any]]


def build_request(
    loss: LossSpecifier,
    y_pred: ArrayLike | None = None,
    y_true: ArrayLike | None = None,
    *,
    inputs: Mapping[str, ArrayLike] | None = None,
    params: Mapping[str, Any] | None = None,
    grad_inputs: Sequence[str] = (),
    grad_output: ArrayLike | None = None,
    encoding: str = "raw",
    parameters: Mapping[str, ArrayLike] | None = None,
    regularization: Mapping[str, Any] | None = None,
    **params_and_inputs: Any,
) -> tuple[lossd_pb2.EvaluateLossRequest, bool]:
    """Build an ``EvaluateLossRequest``; also says whether any input was torch.

    Keyword arguments that are arrays (numpy, torch, lists) are inputs
    (``weight=...``, ``var=...``); scalars and strings are loss parameters.
    List-valued parameters (``cutoffs``) go in ``params=``.
    ``y_pred``/``y_true`` go first, in PyTorch's order.
    """
    tensors: dict[str, ArrayLike] = dict(inputs or {})
    if y_pred is not None:
        tensors["y_pred"] = y_pred
    if y_true is not None:
        tensors["y_true"] = y_true
    all_params: dict[str, Any] = dict(params or {})
    for k, v in params_and_inputs.items():
        if _is_array(v):
            tensors[k] = v
        else:
            all_params[k] = v
    struct = struct_pb2.Struct()
    if all_params:
        struct.update(all_params)
    terms: Sequence[Mapping[str, Any]] = () if isinstance(loss, str) else loss
    request = lossd_pb2.EvaluateLossRequest(
        loss=loss if isinstance(loss, str) else "",
        inputs={k: encode(v, encoding) for k, v in tensors.items()},
        grad_inputs=list(grad_inputs),
    )
    if all_params:
        request.params.CopyFrom(struct)
    if grad_output is not None:
        request.grad_output.CopyFrom(encode(grad_output, encoding))
    for term in terms:
        unknown = set(term) - {"loss", "weight", "params", "name"}
        if unknown:
            raise TypeError(f"unknown term keys {sorted(unknown)}; use loss, weight, params, name")
        t = request.terms.add(loss=term["loss"], name=term.get("name", ""))
        if "weight" in term:
            t.weight = float(term["weight"])
        if term.get("params"):
            t.params.update(dict(term["params"]))
    for name, value in (parameters or {}).items():
        request.parameters[name].CopyFrom(encode(value, encoding))
    if regularization is not None:
        request.regularization.CopyFrom(lossd_pb2.Regularization(**regularization))
    as_torch = any(is_torch_tensor(v) for v in [*tensors.values(), *(parameters or {}).values()])
    return request, as_torch


def _is_array(v: Any) -> bool:
    """Arrays, tensors and lists are inputs; scalars and strings are parameters."""
    return is_torch_tensor(v) or hasattr(v, "__array_interface__") or isinstance(v, (list, tuple))


class Client:
    """A connection to a lossd server.

    ``target`` defaults to ``LOSSD_TARGET`` or ``127.0.0.1:50051``;
    ``timeout`` (seconds) is the default deadline of every call.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float | None = 60.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self.target = target or os.environ.get("LOSSD_TARGET", DEFAULT_TARGET)
        self.timeout = timeout
        channel_options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            *options,
        ]
        self._channel = grpc.insecure_channel(self.target, options=channel_options)
        self._stub = lossd_pb2_grpc.LossServiceStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _deadline(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def list_losses(self, filter: str = "", *, timeout: float | None = None) -> list[lossd_pb2.LossInfo]:
        """Every loss the server offers (``LossInfo`` messages), sorted by name."""
        try:
            reply = self._stub.ListLosses(lossd_pb2.ListLossesRequest(filter=filter), timeout=self._deadline(timeout))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from e
        return list(reply.losses)

    def evaluate(
        self,
        loss: LossSpecifier,
        y_pred: ArrayLike | None = None,
        y_true: ArrayLike | None = None,
        *,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> EvaluateResult:
        """Evaluate ``loss(y_pred, y_true, ...)`` remotely; see :func:`build_request`.

        >>> c.evaluate("mse", [1.0, 2.0], [0.0, 0.0], reduction="sum").value  # doctest: +SKIP
        5.0
        """
        request, as_torch = build_request(loss, y_pred, y_true, **kwargs)
        return self.evaluate_request(request, as_torch=as_torch, timeout=timeout)

    def evaluate_request(
        self, request: lossd_pb2.EvaluateLossRequest, *, as_torch: bool = False, timeout: float | None = None
    ) -> EvaluateResult:
        """Send a prepared ``EvaluateLossRequest``."""
        try:
            reply = self._stub.EvaluateLoss(request, timeout=self._deadline(timeout))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from e
        return EvaluateResult.from_response(reply, as_torch)

    def evaluate_stream(
        self,
        requests: Iterable[lossd_pb2.EvaluateLossRequest],
        *,
        as_torch: bool = False,
        timeout: float | None = None,
    ) -> Iterator[EvaluateResult | LossdError]:
        """Pipeline many requests over one stream; yields a result or an error per request, in order.

        ``timeout`` bounds the whole stream (default: the client's timeout).
        """
        items = (lossd_pb2.EvaluateLossStreamRequest(id=str(i), request=r) for i, r in enumerate(requests))
        try:
            for reply in self._stub.EvaluateLossStream(items, timeout=self._deadline(timeout)):
                if reply.HasField("error"):
                    yield from_status_name(reply.error.code, reply.error.message, reply.error.field)
                else:
                    yield EvaluateResult.from_response(reply.response, as_torch)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from e
