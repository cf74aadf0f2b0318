"""One EvaluateLoss request, from message to message: the rules in one place.

:func:`evaluate` works on torch tensors (the engine); :func:`handle_evaluate`
wraps it with decoding, encoding and timing. Both raise
:class:`~lossd.server.losses.LossError` naming the field and the rule::

    >>> import torch
    >>> from lossd.server.losses import REGISTRY
    >>> r = evaluate(REGISTRY, "mse", {"y_pred": torch.tensor([1.0]), "y_true": torch.tensor([0.0])}, {})
    >>> float(r.loss), r.grads["y_pred"].tolist()
    (1.0, [2.0])
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from google.protobuf import json_format

from .._framing import field_number, join, length_delimited, map_entry
from .._wire import TensorLimits, WireError, reply_encoding
from ..v1 import lossd_pb2
from ._request_caps import check_request
from ._tensors import WIRE_NAMES, check_finite, decode_tensors, encode_tensor, tensor_parts
from .losses import LossError, LossSpec, Registry

__all__ = ["Evaluation", "evaluate", "handle_evaluate", "handle_evaluate_bytes", "resolve_device"]

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

_DEPRECATED = {
    "size_average": "size_average is deprecated in torch and refused here; use reduction "
    "('mean' for size_average=true, 'sum' for false)",
    "reduce": "reduce is deprecated in torch and refused here; use reduction ('none' for reduce=false)",
}


@dataclass
class Evaluation:
    """The outcome of :func:`evaluate`: the loss and gradients by sent name."""

    spec: LossSpec
    loss: torch.Tensor
    grads: dict[str, torch.Tensor]
    forward_s: float = 0.0
    backward_s: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)
    parameter_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    regularized: list[str] = field(default_factory=list)
    #: What the reply calls the loss: the canonical name, or "a+b" for a composite objective.
    loss_name: str = ""

    def __post_init__(self) -> None:
        self.loss_name = self.loss_name or self.spec.name


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate(
    registry: Registry,
    loss: str,
    inputs: Mapping[str, torch.Tensor],
    params: Mapping[str, Any],
    grad_inputs: Sequence[str] = (),
    grad_output: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> Evaluation:
    """Validate, run the loss forward, and backward for the requested inputs."""
    spec = registry.get(loss)
    tensors, sent_as = _bind_inputs(spec, inputs)
    kwargs = _bind_params(spec, params)
    wanted = _grad_targets(spec, tensors, sent_as, grad_inputs)

    if device is not None and device.type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    leaves = {}
    for name, t in tensors.items():
        if name in wanted:
            t = t.detach().requires_grad_(True)
            leaves[name] = t
        tensors[name] = t
    for i in spec.inputs:
        tensors.setdefault(i.name, None)  # type: ignore[arg-type]

    start = time.perf_counter()
    with torch.enable_grad():
        out = _call(spec, tensors, kwargs)
    forward_s = time.perf_counter() - start

    grads: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    if leaves:
        upstream = _grad_output(out, grad_output)
        if out.requires_grad:
            found = torch.autograd.grad(out, list(leaves.values()), upstream, allow_unused=True)
        else:
            found = (None,) * len(leaves)
        for (name, leaf), g in zip(leaves.items(), found):
            grads[sent_as[name]] = torch.zeros_like(leaf) if g is None else g
    elif grad_output is not None:
        _grad_output(out, grad_output)  # still validate it
    backward_s = time.perf_counter() - start
    return Evaluation(spec, out.detach(), grads, forward_s, backward_s)


def _bind_inputs(
    spec: LossSpec, inputs: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Map sent names onto canonical ones and check dtype kinds."""
    tensors: dict[str, torch.Tensor] = {}
    sent_as: dict[str, str] = {}
    for sent, t in inputs.items():
        spec_input = spec.input(sent)
        if spec_input is None:
            raise LossError(f"inputs.{sent}", f"{spec.name} has no input {sent!r}; {_input_list(spec)}")
        name = spec_input.name
        if name in tensors:
            raise LossError(f"inputs.{sent}", f"input {name!r} was sent twice (as {sent_as[name]!r} and {sent!r})")
        tensors[name], sent_as[name] = t, sent
    for i in spec.inputs:
        if i.required and i.name not in tensors:
            also = f" (or {', '.join(i.aliases)})" if i.aliases else ""
            raise LossError(f"inputs.{i.name}", f"is required by {spec.name}{also}: {i.doc or i.role}")
    float_dtypes: dict[str, str] = {}
    for name, t in tensors.items():
        i = spec.input(name)
        assert i is not None
        field = f"inputs.{sent_as[name]}"
        dt = WIRE_NAMES.get(t.dtype, str(t.dtype))
        if i.kind == "float":
            if not t.is_floating_point():
                raise LossError(field, f"must have a floating-point dtype ({i.role}), got {dt}")
        elif i.kind == "int":
            if t.is_floating_point() or t.dtype == torch.bool:
                raise LossError(field, f"must have an integer dtype ({i.role}), got {dt}")
            tensors[name] = t.to(torch.int64)
        elif t.dtype == torch.bool:
            raise LossError(field, f"must have a floating-point or integer dtype, got {dt}")
        elif not t.is_floating_point():
            tensors[name] = t.to(torch.int64)
        if tensors[name].is_floating_point():
            float_dtypes[field] = dt
    if len(set(float_dtypes.values())) > 1:
        listed = ", ".join(f"{f} is {d}" for f, d in float_dtypes.items())
        raise LossError(next(iter(float_dtypes)), f"floating-point inputs must share one dtype; {listed}")
    for dt in set(float_dtypes.values()):
        if dt not in spec.float_dtypes:
            raise LossError(
                next(iter(float_dtypes)),
                f"{spec.name} does not support {dt} on this server; supported: {', '.join(spec.float_dtypes)}",
                "UNIMPLEMENTED",
            )
    return tensors, sent_as


def _input_list(spec: LossSpec) -> str:
    parts = []
    for i in spec.inputs:
        alias = f" alias {'/'.join(i.aliases)}" if i.aliases else ""
        parts.append(f"{i.name} ({i.role}, {i.kind}{', optional' if not i.required else ''}{alias})")
    return "valid inputs: " + ", ".join(parts)


def _bind_params(spec: LossSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """Coerce sent params against the schema and fill in defaults."""
    out = {p.name: p.default for p in spec.params}
    for name, value in params.items():
        p = spec.param(name)
        if p is None:
            if name in _DEPRECATED:
                raise LossError(f"params.{name}", _DEPRECATED[name])
            valid = ", ".join(q.describe() for q in spec.params) or "none"
            raise LossError(f"params.{name}", f"{spec.name} has no parameter {name!r}; valid parameters: {valid}")
        out[name] = p.coerce(value)
    return out


def _grad_targets(
    spec: LossSpec, tensors: Mapping[str, torch.Tensor], sent_as: Mapping[str, str], grad_inputs: Sequence[str]
) -> set[str]:
    if not grad_inputs:
        return {
            n for n, t in tensors.items() if spec.input(n).differentiable and t.is_floating_point()  # type: ignore[union-attr]
        }
    wanted = set()
    for k, sent in enumerate(grad_inputs):
        i = spec.input(sent)
        field = f"grad_inputs[{k}]"
        if i is None or i.name not in tensors:
            raise LossError(field, f"{sent!r} is not an input of this request; sent: {', '.join(sent_as.values())}")
        if not i.differentiable:
            diff = [x.name for x in spec.inputs if x.differentiable]
            raise LossError(field, f"input {sent!r} of {spec.name} is not differentiable; differentiable: {', '.join(diff)}")
        if not tensors[i.name].is_floating_point():
            raise LossError(field, f"input {sent!r} has an integer dtype and cannot have a gradient")
        wanted.add(i.name)
    return wanted


_UNSUPPORTED_MARKERS = ("not implemented for", "\"_vml_cpu\" not implemented", "unsupported dtype")


def _call(spec: LossSpec, tensors: dict[str, torch.Tensor], kwargs: dict[str, Any]) -> torch.Tensor:
    try:
        out = spec.fn(**tensors, **kwargs)
    except LossError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if any(m in text for m in _UNSUPPORTED_MARKERS):
            raise LossError("inputs", f"{spec.name}: torch on this server cannot do this: {text}", "UNIMPLEMENTED") from e
        raise LossError("inputs", f"{spec.name} rejected the inputs: {text}") from e
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"loss {spec.name} returned {type(out).__name__}, not a tensor")
    return out


def _grad_output(out: torch.Tensor, grad_output: torch.Tensor | None) -> torch.Tensor:
    if grad_output is None:
        return torch.ones_like(out)
    if tuple(grad_output.shape) != tuple(out.shape):
        raise LossError("grad_output", f"has shape {list(grad_output.shape)}; the loss has shape {list(out.shape)}")
    if not grad_output.is_floating_point():
        raise LossError("grad_output", "must have a floating-point dtype")
    return grad_output.to(device=out.device, dtype=out.dtype)


def handle_evaluate(
    registry: Registry,
    request: lossd_pb2.EvaluateLossRequest,
    device: torch.device | None = None,
    limits: TensorLimits | int = TensorLimits(),  # noqa: B008 - frozen
) -> lossd_pb2.EvaluateLossResponse:
    """Serve one ``EvaluateLossRequest``; raises ``LossError`` for a bad request.

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
) -> bytes:
    """Serve one ``EvaluateLossRequest``: the serialized ``EvaluateLossResponse``.

    Raises ``LossError`` for a bad request. The reply is bytes, framed around
    the gradients' own memory, so a large reply is copied once (see
    :mod:`lossd._framing`); ``EvaluateLossResponse.FromString`` reads it.
    ``payloads`` holds the ``raw`` bytes of tensors that were left out of
    ``request`` (:func:`lossd._framing.split_payloads`), by field path; they
    are wrapped without a copy, and the dict is emptied once the loss is
    computed so that the received bytes can be freed before the reply is built.
    ``limits`` bound the request's tensors before any is decoded
    (:func:`lossd._wire.check_tensors`; an int is the per-tensor element limit).
    NaN and infinite values are refused unless the request sets ``allow_non_finite``.
    """
    from ._objective import Regularization, Term, evaluate_objective

    start = time.perf_counter()
    check_request(request)  # strings and repeated fields within their caps, before anything reads them
    objective = bool(request.terms) or bool(request.parameters) or request.HasField("regularization")
    if request.terms and (request.loss or request.params.fields):
        raise LossError("terms", "set either loss/params or terms, not both")
    if not request.terms:
        registry.get(request.loss)  # an unknown loss is the first thing to report
    try:
        reply_encoding(request.output_encoding, "raw")  # an unknown number is refused before any work
    except WireError as e:
        raise LossError(e.field, e.message, e.code) from e
    encodings = set()
    sent = payloads if payloads is not None else {}
    wire = [(f"{group}.{name}", getattr(request, group)[name]) for group in ("inputs", "parameters")
            for name in sorted(getattr(request, group))]
    if request.HasField("grad_output"):
        wire.append(("grad_output", request.grad_output))
    try:
        decoded = decode_tensors([(path, msg, sent.get(path)) for path, msg in wire], limits, len(request.terms))
        for (path, _), (tensor, enc) in zip(wire, decoded):
            encodings.add(enc)
            if not request.allow_non_finite:
                check_finite(tensor, path, _ALLOW_NON_FINITE)
    except WireError as e:
        raise LossError(e.field, e.message, e.code) from e
    tensors = {path: tensor for (path, _), (tensor, _) in zip(wire, decoded)}
    del decoded
    inputs = {path.partition(".")[2]: t for path, t in tensors.items() if path.startswith("inputs.")}
    parameters = {path.partition(".")[2]: t for path, t in tensors.items() if path.startswith("parameters.")}
    grad_output = tensors.pop("grad_output", None)
    del tensors
    decode_s = time.perf_counter() - start

    if objective:
        if grad_output is not None:
            raise LossError("grad_output", "is only for a single non-scalar loss; objectives are scalar")
        if request.terms:
            terms = [
                Term(t.loss, t.weight if t.HasField("weight") else 1.0, _struct(t.params, f"terms[{i}].params"), t.name)
                for i, t in enumerate(request.terms)
            ]
        else:
            terms = [Term(request.loss, 1.0, _struct(request.params))]
        r = request.regularization
        reg = Regularization(r.l1, r.l2, tuple(r.include), tuple(r.exclude))
        result = evaluate_objective(registry, terms, inputs, parameters, reg, list(request.grad_inputs), device)
    else:
        result = evaluate(registry, request.loss, inputs, _struct(request.params), list(request.grad_inputs),
                          grad_output, device)
    del inputs, parameters, grad_output
    sent.clear()  # the received bytes can go before the reply is built

    start = time.perf_counter()
    encoding = reply_encoding(request.output_encoding, "values" if "values" in encodings else "raw")
    head = lossd_pb2.EvaluateLossResponse(loss_name=result.loss_name, parts=result.parts, regularized=result.regularized)
    if result.loss.dim() == 0:
        head.value = float(result.loss)
    tensors = {"loss": {"": result.loss}, "grads": result.grads, "parameter_grads": result.parameter_grads}
    itemsize = 8 if encoding == "values" else None
    nbytes = sum(t.numel() * (itemsize or t.element_size()) for group in tensors.values() for t in group.values())
    if nbytes < FRAME_FROM_BYTES:  # small: upb builds it faster than Python frames it
        head.loss.CopyFrom(encode_tensor(result.loss, encoding))
        for name in ("grads", "parameter_grads"):
            for key, t in tensors[name].items():
                getattr(head, name)[key].CopyFrom(encode_tensor(t, encoding))
        pieces = [head.SerializeToString()]
    else:  # large: framed straight from the tensors' memory (lossd._framing), copied once by join
        pieces = [head.SerializeToString(), *length_delimited(_REPLY["loss"], tensor_parts(result.loss, encoding))]
        for name in ("grads", "parameter_grads"):
            for key, t in tensors[name].items():
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


def _struct(message: Any, field: str = "params") -> dict[str, Any]:
    """A ``google.protobuf.Struct`` as a dict; NaN/Infinity numbers are refused."""
    if not message.ByteSize():
        return {}
    try:
        return json_format.MessageToDict(message)
    except ValueError as e:
        raise LossError(field, f"numbers must be finite (NaN and Infinity cannot be parameters): {e}") from e
