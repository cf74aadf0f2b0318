"""Binding: what a caller sent, checked against what a loss (or a data set) declares.

:func:`bind_inputs` maps sent tensor names (aliases included) onto a loss's
canonical inputs and checks their dtypes; :func:`bind_params` coerces sent
parameters against declared :class:`~lossd.server.losses.Param` s and fills in
the defaults — for a loss's ``params`` and for a training data set's alike::

    >>> from lossd.server.losses import REGISTRY
    >>> bind_params(REGISTRY.get("huber_loss"), {"delta": 2})
    {'reduction': 'mean', 'delta': 2.0}
    >>> bind_params(REGISTRY.get("huber_loss"), {"size_average": True}, refused=DEPRECATED_PARAMS)
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: params.size_average: size_average is deprecated in torch and \
refused here; use reduction ('mean' for size_average=true, 'sum' for false)

Every refusal is a :class:`~lossd.server.losses.FieldError` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from ..._wire import FieldError
from ..losses import WIRE_NAMES, LossSpec, Param

__all__ = ["DEPRECATED_PARAMS", "HasParams", "bind_inputs", "bind_params", "grad_targets"]

#: Loss parameters torch deprecated: refused with what to send instead.
DEPRECATED_PARAMS = {
    "size_average": "size_average is deprecated in torch and refused here; use reduction "
    "('mean' for size_average=true, 'sum' for false)",
    "reduce": "reduce is deprecated in torch and refused here; use reduction ('none' for reduce=false)",
}


class HasParams(Protocol):
    """Something with a name and declared parameters: a ``LossSpec``, a training data set."""

    @property
    def name(self) -> str: ...

    @property
    def params(self) -> tuple[Param, ...]: ...


def bind_params(
    owner: HasParams, sent: Mapping[str, Any], prefix: str = "", refused: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``sent`` coerced against ``owner.params``, with the defaults of those not sent.

    Errors name ``{prefix}params.<name>``; a name in ``refused`` is refused with its text.
    """
    out = {p.name: p.default for p in owner.params}
    for name, value in sent.items():
        p = next((q for q in owner.params if q.name == name), None)
        if p is None:
            if refused and name in refused:
                raise FieldError(f"{prefix}params.{name}", refused[name])
            valid = ", ".join(q.describe() for q in owner.params) or "none"
            raise FieldError(f"{prefix}params.{name}",
                            f"{owner.name} has no parameter {name!r}; valid parameters: {valid}")
        try:
            out[name] = p.coerce(value)
        except FieldError as e:
            if not prefix:
                raise
            raise FieldError(prefix + e.field, e.message, e.code) from e
    return out


def bind_inputs(
    spec: LossSpec, inputs: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Map sent names onto canonical ones and check dtype kinds: ``(tensors, sent_as)``."""
    tensors: dict[str, torch.Tensor] = {}
    sent_as: dict[str, str] = {}
    for sent, t in inputs.items():
        spec_input = spec.input(sent)
        if spec_input is None:
            raise FieldError(f"inputs.{sent}", f"{spec.name} has no input {sent!r}; {_input_list(spec)}")
        name = spec_input.name
        if name in tensors:
            raise FieldError(f"inputs.{sent}", f"input {name!r} was sent twice (as {sent_as[name]!r} and {sent!r})")
        tensors[name], sent_as[name] = t, sent
    for declared in spec.inputs:
        if declared.required and declared.name not in tensors:
            also = f" (or {', '.join(declared.aliases)})" if declared.aliases else ""
            raise FieldError(f"inputs.{declared.name}",
                             f"is required by {spec.name}{also}: {declared.doc or declared.role}")
    float_dtypes: dict[str, str] = {}
    for name, t in tensors.items():
        i = spec.input(name)
        assert i is not None
        field = f"inputs.{sent_as[name]}"
        dt = WIRE_NAMES.get(t.dtype, str(t.dtype))
        if i.kind == "float":
            if not t.is_floating_point():
                raise FieldError(field, f"must have a floating-point dtype ({i.role}), got {dt}")
        elif i.kind == "int":
            if t.is_floating_point() or t.dtype == torch.bool:
                raise FieldError(field, f"must have an integer dtype ({i.role}), got {dt}")
            tensors[name] = t.to(torch.int64)
        elif t.dtype == torch.bool:
            raise FieldError(field, f"must have a floating-point or integer dtype, got {dt}")
        elif not t.is_floating_point():
            tensors[name] = t.to(torch.int64)
        if tensors[name].is_floating_point():
            float_dtypes[field] = dt
    if len(set(float_dtypes.values())) > 1:
        listed = ", ".join(f"{f} is {d}" for f, d in float_dtypes.items())
        raise FieldError(next(iter(float_dtypes)), f"floating-point inputs must share one dtype; {listed}")
    for dt in set(float_dtypes.values()):
        if dt not in spec.float_dtypes:
            raise FieldError(
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


def grad_targets(
    spec: LossSpec, tensors: Mapping[str, torch.Tensor], sent_as: Mapping[str, str], grad_inputs: Sequence[str]
) -> set[str]:
    """Canonical names of the inputs to differentiate: ``grad_inputs``, or every differentiable
    floating-point input when it is empty."""
    if not grad_inputs:
        return {
            n for n, t in tensors.items()
            if (declared := spec.input(n)) is not None and declared.differentiable and t.is_floating_point()
        }
    wanted = set()
    for k, sent in enumerate(grad_inputs):
        i = spec.input(sent)
        field = f"grad_inputs[{k}]"
        if i is None or i.name not in tensors:
            raise FieldError(field, f"{sent!r} is not an input of this request; sent: {', '.join(sent_as.values())}")
        if not i.differentiable:
            diff = [x.name for x in spec.inputs if x.differentiable]
            raise FieldError(field, f"input {sent!r} of {spec.name} is not differentiable; differentiable: {', '.join(diff)}")
        if not tensors[i.name].is_floating_point():
            raise FieldError(field, f"input {sent!r} has an integer dtype and cannot have a gradient")
        wanted.add(i.name)
    return wanted
