"""The message layer of EvaluateLoss: request message in, serialized reply out.

:func:`handle_evaluate_bytes` decodes the request's tensors (the wire rules,
before any large allocation), calls the evaluation layer
(:func:`lossd.server.evaluation.bind` and ``run_bound``, or ``evaluate_objective``) and
encodes the loss and gradients in the request's encoding. Every refusal is a
:class:`~lossd.server.losses.FieldError` naming the field and the rule::

    >>> from lossd.server.losses import REGISTRY
    >>> from lossd.v1 import lossd_pb2
    >>> request = lossd_pb2.EvaluateLossRequest(loss="mse", inputs={
    ...     "y_pred": lossd_pb2.Tensor(dtype="float32", shape=[1], values=[1.0]),
    ...     "y_true": lossd_pb2.Tensor(dtype="float32", shape=[1], values=[0.0])})
    >>> reply = handle_evaluate(REGISTRY, request)
    >>> reply.value, list(reply.grads["y_pred"].values)
    (1.0, [2.0])
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from google.protobuf import json_format, struct_pb2

from ..._framing import Buffer, field_number, join, length_delimited, map_entry
from ..._wire import FieldError, TensorLimits
from ..._wire import reply_encoding as wire_reply_encoding
from ...v1 import lossd_pb2
from ..evaluation import (
    Binding,
    Evaluation,
    Regularization,
    Term,
    bind,
    capture_warnings,
    evaluate_objective,
    run_bound,
)
from ..losses import Registry, strictness
from ._caps import check_request, tensor_data_bytes
from ._plan import Plan, PlanInput, Plans, signature
from ._tensors import check_finite, decode_tensors, encode_tensor, from_raw, tensor_parts

__all__ = [
    "FRAME_FROM_BYTES", "Decoded", "decode_request", "encode_reply", "handle_evaluate", "handle_evaluate_bytes",
    "reply_encoding", "struct_to_dict",
]

#: Replies with at least this many tensor bytes are framed around the tensors' memory.
FRAME_FROM_BYTES = 1 << 16
#: Field numbers of the reply's framed fields.
_REPLY = {
    name: field_number(lossd_pb2.EvaluateLossResponse, name)
    for name in ("loss", "grads", "parameter_grads", "timing")
}

#: How a client lets NaN and infinite values through (named when they are refused).
_ALLOW_NON_FINITE = ("set allow_non_finite in the request to evaluate them as torch would "
                     "(SDK: allow_non_finite=True; CLI: lossd eval --allow-non-finite)")


def handle_evaluate(
    registry: Registry,
    request: lossd_pb2.EvaluateLossRequest,
    device: torch.device | None = None,
    limits: TensorLimits | int = TensorLimits(),  # noqa: B008 - frozen
) -> lossd_pb2.EvaluateLossResponse:
    """Serve one ``EvaluateLossRequest``; raises ``FieldError`` for a bad request.

    The reply as a message: :func:`handle_evaluate_bytes` parsed. The server
    sends the bytes themselves.
    """
    return lossd_pb2.EvaluateLossResponse.FromString(
        handle_evaluate_bytes(registry, request, device, limits))


def handle_evaluate_bytes(
    registry: Registry,
    request: lossd_pb2.EvaluateLossRequest,
    device: torch.device | None = None,
    limits: TensorLimits | int = TensorLimits(),  # noqa: B008 - frozen
    payloads: dict[str, memoryview] | None = None,
    plans: Plans[Plan] | None = None,
    caps_checked: bool = False,
) -> bytes:
    """Serve one ``EvaluateLossRequest``: the serialized ``EvaluateLossResponse``.

    Raises ``FieldError`` for a bad request. The reply is bytes, framed around
    the gradients' own memory, so a large reply is copied once (see
    :mod:`lossd._framing`); ``EvaluateLossResponse.FromString`` reads it.
    ``payloads`` holds the ``raw`` bytes of tensors that were left out of
    ``request`` (:func:`lossd._framing.split_payloads`), by field path; they
    are wrapped without a copy, and the dict is emptied once the loss is
    computed so that the received bytes can be freed before the reply is built.
    ``limits`` bound the request's tensors before any is decoded
    (:func:`lossd._wire.check_tensors`; an int is the per-tensor element limit), and what its losses
    build beyond them before any runs (``max_loss_work``, :func:`~lossd.server.evaluation.check_work`).
    NaN and infinite values are refused unless the request sets ``allow_non_finite``.
    ``plans`` (a service's :class:`~lossd.server.rpc._plan.Plans`) lets a request whose
    signature was validated before skip straight to decoding and computing (unless its loss builds more
    than ``limits`` allow: it is bound again, and refused). ``caps_checked``: the
    caller has checked the request's strings and repeated fields (:func:`~._caps.check_request`; the
    LargeRequests interceptor does, for every EvaluateLoss call), so they are not checked again.
    """
    limits = TensorLimits.of(limits)
    key = signature(request, payloads) if plans is not None else None
    if key is not None:
        assert plans is not None
        plan = plans.get(key)
        if plan is not None and plan.binding.work <= limits.max_loss_work:  # (kept under a higher limit: bind)
            # A planned signature skips the checks decode_request makes, but not the caps (strings,
            # repeated fields): they hold on every request, and are checked before the payloads are read.
            if not caps_checked:
                check_request(request, at_least=tensor_data_bytes(request))
            return _run_plan(plan, request, payloads, device, time.perf_counter())
    decoded = decode_request(registry, request, limits, payloads, caps_checked)
    encoding = reply_encoding(request, decoded.encodings)
    if decoded.objective:
        if request.terms:
            terms = [
                Term(
                    t.loss,
                    t.weight if t.HasField("weight") else 1.0,
                    struct_to_dict(t.params, f"terms[{i}].params", registry, t.loss),
                    t.name,
                    dict(t.inputs),
                    dict(t.transforms),
                )
                for i, t in enumerate(request.terms)
            ]
        else:
            terms = [Term(request.loss, 1.0, struct_to_dict(request.params, "params", registry, request.loss))]
        r = request.regularization
        reg = Regularization(r.l1, r.l2, tuple(r.include), tuple(r.exclude))
        result = evaluate_objective(registry, terms, decoded.inputs, decoded.parameters, reg,
                                    list(request.grad_inputs), device, request.strict, plain=not request.terms,
                                    grad_output=decoded.grad_output, max_loss_work=limits.max_loss_work)
    else:
        with capture_warnings() as seen, strictness(request.strict):
            binding, bound = bind(registry, request.loss, decoded.inputs,
                                  struct_to_dict(request.params, "params", registry, request.loss),
                                  list(request.grad_inputs), max_loss_work=limits.max_loss_work)
            plan = _plan(binding, decoded.inputs, bound, encoding, seen) if key is not None else None
            result = run_bound(binding, bound, decoded.grad_output, device)
        result.warnings = seen
        del bound
        if plan is not None and plans is not None and key is not None:
            plans.put(key, plan)
    decoded.inputs = decoded.parameters = {}
    decoded.grad_output = None
    if payloads is not None:
        payloads.clear()  # the received bytes can go before the reply is built
    return encode_reply(result, encoding, decoded.decode_s)


@dataclass
class Decoded:
    """A request's tensors, decoded and checked (:func:`decode_request`)."""

    inputs: dict[str, torch.Tensor]
    parameters: dict[str, torch.Tensor]
    grad_output: torch.Tensor | None
    #: How the request's tensors were sent: ``raw``, ``values``.
    encodings: set[str]
    #: A composite or regularized objective (terms, parameters or regularization set).
    objective: bool
    decode_s: float


def decode_request(
    registry: Registry,
    request: lossd_pb2.EvaluateLossRequest,
    limits: TensorLimits | int = TensorLimits(),  # noqa: B008 - frozen
    payloads: dict[str, memoryview] | None = None,
    caps_checked: bool = False,
) -> Decoded:
    """Steps 1-2 of an evaluation: the loss is known, the tensors obey the wire rules and the
    limits (decoded without copying ``raw`` bytes), and are finite unless ``allow_non_finite``."""
    start = time.perf_counter()
    if not caps_checked:
        # strings and repeated fields within their caps, before anything reads them
        check_request(request, at_least=tensor_data_bytes(request))
    objective = bool(request.terms) or bool(request.parameters) or request.HasField("regularization")
    if request.terms and (request.loss or request.params.fields):
        raise FieldError("terms", "set either loss/params or terms, not both")
    if not request.terms:
        registry.get(request.loss)  # an unknown loss is the first thing to report
    wire_reply_encoding(request.output_encoding, "raw")  # an unknown number is refused before any work
    encodings = set()
    sent = payloads if payloads is not None else {}
    wire = [(f"{group}.{name}", getattr(request, group)[name]) for group in ("inputs", "parameters")
            for name in sorted(getattr(request, group))]
    if request.HasField("grad_output"):
        wire.append(("grad_output", request.grad_output))
    decoded = decode_tensors([(path, msg, sent.get(path)) for path, msg in wire], limits, len(request.terms))
    for (path, msg), (tensor, enc) in zip(wire, decoded):
        encodings.add(enc)
        if not request.allow_non_finite:
            check_finite(tensor, path, _ALLOW_NON_FINITE, msg.values if enc == "values" else None)
    tensors = {path: tensor for (path, _), (tensor, _) in zip(wire, decoded)}
    del decoded
    inputs = {path.partition(".")[2]: t for path, t in tensors.items() if path.startswith("inputs.")}
    parameters = {path.partition(".")[2]: t for path, t in tensors.items() if path.startswith("parameters.")}
    grad_output = tensors.pop("grad_output", None)
    return Decoded(inputs, parameters, grad_output, encodings, objective, time.perf_counter() - start)


def reply_encoding(request: lossd_pb2.EvaluateLossRequest, encodings: set[str]) -> str:
    """``raw`` or ``values``: ``output_encoding``, else ``values`` if any tensor was sent as values."""
    return wire_reply_encoding(request.output_encoding, "values" if "values" in encodings else "raw")


def _plan(binding: Binding, inputs: Mapping[str, torch.Tensor], bound: Mapping[str, torch.Tensor],
          encoding: str, warned: list[str]) -> Plan | None:
    """What this request's validation decided (see :mod:`._plan`), with the warnings binding raised
    (``warned`` so far); None when the binding read a tensor's values (a tensor sent for a parameter)."""
    if binding.tensor_params:
        return None
    planned = []
    for name, sent in sorted(binding.sent_as.items(), key=lambda item: item[1]):
        t = inputs[sent]
        to = bound[name].dtype if bound[name].dtype != t.dtype else None
        planned.append(PlanInput(f"inputs.{sent}", sent, t.dtype, tuple(t.shape), to))
    return Plan(tuple(planned), binding, encoding, tuple(warned))


def _run_plan(plan: Plan, request: lossd_pb2.EvaluateLossRequest, payloads: dict[str, memoryview] | None,
              device: torch.device | None, start: float) -> bytes:
    """A request of a planned signature: decoded from its payloads, evaluated with the plan's binding."""
    check = not request.allow_non_finite
    tensors: dict[str, torch.Tensor] = {}
    names = {sent: name for name, sent in plan.binding.sent_as.items()}
    for i in plan.inputs:
        raw = payloads.get(i.path) if payloads else None
        t = from_raw(request.inputs[i.sent].raw if raw is None else raw, i.dtype, i.shape)
        if check:
            check_finite(t, i.path, _ALLOW_NON_FINITE)
        tensors[names[i.sent]] = t if i.to is None else t.to(i.to)
    decode_s = time.perf_counter() - start
    with capture_warnings() as seen, strictness(request.strict):
        result = run_bound(plan.binding, tensors, None, device)
    result.warnings = [*plan.warnings, *(w for w in seen if w not in plan.warnings)]
    del tensors
    if payloads:
        payloads.clear()  # the received bytes can go before the reply is built
    return encode_reply(result, plan.encoding, decode_s)


def encode_reply(result: Evaluation, encoding: str, decode_s: float) -> bytes:
    """Step 8: the serialized ``EvaluateLossResponse`` of ``result``, its tensors in ``encoding``."""
    start = time.perf_counter()
    head = lossd_pb2.EvaluateLossResponse(
        loss_name=result.loss_name, parts=result.parts, regularized=result.regularized, warnings=result.warnings
    )
    if result.loss.dim() == 0 and not result.loss.is_complex():  # a complex loss is in `loss` only
        head.value = float(result.loss)
    outputs: dict[str, Mapping[str, torch.Tensor]] = {
        "loss": {"": result.loss}, "grads": result.grads, "parameter_grads": result.parameter_grads,
    }
    itemsize = 8 if encoding == "values" else None
    nbytes = sum(t.numel() * (itemsize or t.element_size()) for group in outputs.values() for t in group.values())
    if nbytes < FRAME_FROM_BYTES:  # small: upb builds it faster than Python frames it
        head.loss.CopyFrom(encode_tensor(result.loss, encoding))
        for name in ("grads", "parameter_grads"):
            for key, t in outputs[name].items():
                getattr(head, name)[key].CopyFrom(encode_tensor(t, encoding))
        pieces: list[Buffer] = [head.SerializeToString()]
    else:  # large: framed straight from the tensors' memory (lossd._framing), copied once by join
        pieces = [head.SerializeToString(), *length_delimited(_REPLY["loss"], tensor_parts(result.loss, encoding))]
        for name in ("grads", "parameter_grads"):
            for key, t in outputs[name].items():
                pieces += map_entry(_REPLY[name], key, tensor_parts(t, encoding))
    encode_s = time.perf_counter() - start
    timing = lossd_pb2.Timing(
        decode_ms=decode_s * 1e3,
        forward_ms=result.forward_s * 1e3,
        backward_ms=result.backward_s * 1e3,
        encode_ms=encode_s * 1e3,
    )
    pieces += length_delimited(_REPLY["timing"], [timing.SerializeToString()])
    return join(pieces)


def struct_to_dict(
    message: Any, field: str = "params", registry: Registry | None = None, loss: str = ""
) -> dict[str, Any]:
    """A ``google.protobuf.Struct`` as a dict; NaN/Infinity numbers are refused, except +-Infinity
    as the value of a parameter of ``loss`` that declares it (``Param.infinite``: a norm degree).

    >>> from google.protobuf import struct_pb2
    >>> from lossd.server.losses import REGISTRY
    >>> params = struct_pb2.Struct(fields={"p": struct_pb2.Value(number_value=float("inf"))})
    >>> struct_to_dict(params, registry=REGISTRY, loss="pairwise_distance")
    {'p': inf}
    >>> struct_to_dict(params, registry=REGISTRY, loss="mse_loss")
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: params: numbers must be finite (NaN and Infinity cannot be parameters): \
Fail to serialize Infinity for Value.number_value, which would parse as string_value
    """
    if not message.ByteSize():
        return {}
    try:
        return json_format.MessageToDict(message)
    except ValueError as e:
        error = e
    infinite = _infinite_params(message, registry, loss)
    if infinite:  # the rest converted as before: any other non-finite number is refused as before
        rest = struct_pb2.Struct()
        rest.CopyFrom(message)
        for name in infinite:
            del rest.fields[name]
        try:
            others = json_format.MessageToDict(rest)
        except ValueError as e:
            error = e
        else:
            return {name: infinite[name] if name in infinite else others[name] for name in message.fields}
    raise FieldError(field, f"numbers must be finite (NaN and Infinity cannot be parameters): {error}") from error


def _infinite_params(message: Any, registry: Registry | None, loss: str) -> dict[str, float]:
    """The +-Infinity numbers of ``message`` sent for parameters of ``loss`` that take them."""
    spec = registry.find(loss) if registry is not None and loss else None
    if spec is None:
        return {}
    out = {}
    for p in spec.params:
        value = message.fields[p.name] if p.infinite and p.name in message.fields else None
        if value is not None and value.WhichOneof("kind") == "number_value" and math.isinf(value.number_value):
            out[p.name] = value.number_value
    return out
