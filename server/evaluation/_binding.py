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

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from torch.nn import _reduction

from ..._settings import env_name, flag_name
from ..._wire import FieldError
from ..losses import WIRE_NAMES, LossSpec, Param, broadcast_elements

__all__ = [
    "DEPRECATED_PARAMS", "HasParams", "bind_inputs", "bind_params", "check_work", "grad_targets", "has_grad",
    "legacy_reduction", "loss_work", "params_from_tensors", "split_scalars",
]

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
    """``sent`` coerced against ``owner.params``, with the defaults of those not sent (a list or dict default
    copied: a loss that changes what it is given must not change the declared default for every later call).

    Errors name ``{prefix}params.<name>``; a name in ``refused`` is refused with its text.
    """
    out = {p.name: copy.deepcopy(p.default) if isinstance(p.default, (list, dict)) else p.default
           for p in owner.params}
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


def legacy_reduction(spec: LossSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """torch's deprecated ``size_average`` / ``reduce`` turned into ``reduction`` as torch turns
    them, with torch's own deprecation warning: when one of them is not null they override
    ``reduction``; when every one sent is null they are ignored (``reduction`` stays), as in torch.

    Only for a loss whose torch functional takes them (``LossSpec.legacy_reduction``); any other
    refuses them, null included, as torch raises a TypeError there.

    >>> from lossd.server.losses import REGISTRY
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     legacy_reduction(REGISTRY.get("mse_loss"), {"size_average": False})
    {'reduction': 'sum'}
    >>> legacy_reduction(REGISTRY.get("mse_loss"), {"size_average": None, "reduction": "none"})
    {'reduction': 'none'}
    >>> legacy_reduction(REGISTRY.get("huber_loss"), {"reduce": False})
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: params.reduce: huber_loss does not take reduce \
(torch.nn.functional.huber_loss has no such argument); use reduction
    """
    legacy = {k: params[k] for k in DEPRECATED_PARAMS if k in params}
    if not legacy:
        return dict(params)
    if not spec.legacy_reduction:
        name = next(iter(legacy))
        why = (f"{spec.source} has no such argument" if spec.source.startswith("torch.")
               else "a deprecated argument of older torch losses only")
        raise FieldError(f"params.{name}", f"{spec.name} does not take {name} ({why}); use reduction")
    for name, value in legacy.items():
        if value is not None and not isinstance(value, bool):
            raise FieldError(
                f"params.{name}", f"must be true, false or null, got {value!r} ({DEPRECATED_PARAMS[name]})"
            )
    rest = {k: v for k, v in params.items() if k not in legacy}
    if all(v is None for v in legacy.values()):  # torch: `if size_average is not None or reduce is not None`
        return rest
    rest["reduction"] = _reduction.legacy_get_string(legacy.get("size_average"), legacy.get("reduce"))
    return rest


def params_from_tensors(
    spec: LossSpec, inputs: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors sent for a *parameter* (``margin=torch.tensor(0.5)``, a numpy scalar): torch takes a
    one-element tensor where it takes a number, so lossd does too. Returns ``(inputs, params)``.

    >>> from lossd.server.losses import REGISTRY
    >>> params_from_tensors(REGISTRY.get("huber_loss"), {"input": torch.zeros(1), "delta": torch.tensor(2.0)})[1]
    {'delta': 2.0}
    """
    rest: dict[str, torch.Tensor] = {}
    params: dict[str, Any] = {}
    for name, t in inputs.items():
        p = spec.param(name) if spec.input(name) is None else None
        if p is None:
            rest[name] = t
        elif p.type in ("int_list", "float_list") and t.dim() == 1:
            params[name] = t.tolist()
        elif t.numel() == 1 and not t.is_complex():
            params[name] = t.item()
        else:
            why = "a complex tensor is not a real number" if t.is_complex() else \
                f"a tensor of shape {list(t.shape)} is not one number"
            raise FieldError(f"inputs.{name}", f"{name!r} is a parameter of {spec.name} ({p.describe()}); "
                            f"send it in params ({why})")
    return rest, params


def split_scalars(spec: LossSpec, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Params named like an input: ``(params, scalars)``.

    A scalar is an input's Python form (gaussian_nll_loss ``var=0.5``, CTC lengths as
    lists; see :class:`~lossd.server.losses.Input` ``scalar``), coerced and passed to
    torch as it is; ``null`` for an optional input means absent (torch's default).

    >>> from lossd.server.losses import REGISTRY
    >>> split_scalars(REGISTRY.get("gaussian_nll_loss"), {"var": 1, "full": True})
    ({'full': True}, {'var': 1.0})
    """
    rest: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    for name, value in params.items():
        i = spec.input(name) if spec.param(name) is None else None
        if i is None:
            rest[name] = value
        elif value is None and not i.required:
            continue
        elif i.scalar is None:
            raise FieldError(f"params.{name}", f"{name!r} is an input of {spec.name} ({i.doc or i.role}); "
                            "send it as a tensor in inputs")
        else:
            scalars[i.name] = i.scalar_param().coerce(value)
    return rest, scalars


def bind_inputs(
    spec: LossSpec, inputs: Mapping[str, torch.Tensor], scalars: Mapping[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Map sent names onto canonical ones and check dtype kinds: ``(tensors, sent_as)``.

    Inputs of kind ``float`` take any dtype torch may compute with (floating,
    complex, integer, bool): torch's type promotion decides the result's dtype
    and torch's own refusal becomes the error, as locally. Only a floating dtype
    the loss does not list is refused here (UNIMPLEMENTED). ``scalars`` (from
    :func:`split_scalars`) count as sent.
    """
    scalars = scalars or {}
    tensors: dict[str, torch.Tensor] = {}
    sent_as: dict[str, str] = {}
    for sent, t in inputs.items():
        spec_input = spec.input(sent)
        if spec_input is None:
            raise FieldError(f"inputs.{sent}", f"{spec.name} has no input {sent!r}; {_input_list(spec)}")
        name = spec_input.name
        if name in tensors:
            raise FieldError(f"inputs.{sent}", f"input {name!r} was sent twice (as {sent_as[name]!r} and {sent!r})")
        if name in scalars:
            raise FieldError(f"inputs.{sent}", f"input {name!r} was sent twice (as a tensor and in params)")
        tensors[name], sent_as[name] = t, sent
    for declared in spec.inputs:
        if declared.required and declared.name not in tensors and declared.name not in scalars:
            also = f" (or {', '.join(declared.aliases)})" if declared.aliases else ""
            raise FieldError(f"inputs.{declared.name}",
                             f"is required by {spec.name}{also}: {declared.doc or declared.role}")
    for name, t in tensors.items():
        i = spec.input(name)
        assert i is not None
        field = f"inputs.{sent_as[name]}"
        dt = WIRE_NAMES.get(t.dtype, str(t.dtype))
        if i.kind == "int":
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise FieldError(field, f"must have an integer dtype ({i.role}), got {dt}")
            tensors[name] = t.to(torch.int64)
        elif t.is_floating_point() and dt not in spec.float_dtypes:
            raise FieldError(
                field,
                f"{spec.name} does not support {dt} on this server; supported: {', '.join(spec.float_dtypes)}",
                "UNIMPLEMENTED",
            )
    return tensors, sent_as


def loss_work(spec: LossSpec, bound: Mapping[str, Any], params: Mapping[str, Any]) -> tuple[int, str, str]:
    """``(elements, field, what)`` of the largest tensor ``spec`` builds from ``bound`` (canonical names) and its
    bound ``params`` beyond its inputs: its :class:`~lossd.server.losses.Work`'s, or what its ``broadcasts``
    inputs broadcast to (a [1, N] and an [N, 1] tensor are N² elements to an elementwise loss), whichever is
    larger; ``(0, "", "")`` when neither passes the largest input."""
    if spec.work is None and not spec.broadcasts:  # most losses: nothing to count
        return 0, "", ""
    tensors = [t for t in bound.values() if isinstance(t, torch.Tensor)]
    largest = max((t.numel() for t in tensors), default=0)
    n = broadcast_elements([tuple(t.shape) for name in spec.broadcasts
                            if isinstance(t := bound.get(name), torch.Tensor)]) if spec.broadcasts else 0
    field, what = "inputs", "what its inputs broadcast to"
    if spec.work is not None:
        try:
            counted = int(spec.work.elements(bound, params))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError):  # shapes it refuses
            counted = 0
        if counted > n:
            n, field, what = counted, spec.work.field, spec.work.what
    return (n, field, what) if n > largest else (0, "", "")


def check_work(spec: LossSpec, bound: Mapping[str, Any], params: Mapping[str, Any], before: int = 0, *,
               limit: int) -> int:
    """Refuse a call whose losses would build more than ``limit`` elements beyond their inputs (the server's
    ``--max-loss-work``, default :data:`~lossd._wire.MAX_LOSS_WORK`; :func:`loss_work`; ``before``: what the
    objective's earlier terms build), from the shapes, before any loss runs; the elements this one builds.

    >>> from lossd.server.losses import REGISTRY
    >>> nt_xent = REGISTRY.get("nt_xent_loss")
    >>> check_work(nt_xent, {"input": torch.zeros(8, 2), "target": torch.zeros(8, 2)}, {}, limit=1000)
    256
    >>> x = torch.empty(6000, 1, device="meta")
    >>> check_work(nt_xent, {"input": x, "target": x}, {}, limit=2**26)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: inputs.input: nt_xent_loss would build the (2N)² similarity matrix, 144000000 \
elements, from inputs input [6000, 1], target [6000, 1]; a call may build at most 67108864 elements beyond \
its inputs (--max-loss-work, env LOSSD_MAX_LOSS_WORK): send fewer rows per call
    """
    n, field, what = loss_work(spec, bound, params)
    if before + n > limit:
        shapes = ", ".join(f"{k} {list(t.shape)}" for k, t in bound.items() if isinstance(t, torch.Tensor))
        earlier = f" in all (the objective's terms before this one: {before})" if before else ""
        raise FieldError(field, f"{spec.name} would build {what}, {n} elements, from inputs {shapes}; a call may "
                                f"build at most {limit} elements beyond its inputs ({_WORK_HINT}){earlier}: send "
                                "fewer rows per call", "RESOURCE_EXHAUSTED")
    return n


#: The setting that raises or lowers :func:`check_work`'s limit, named in its refusals.
_WORK_HINT = f"{flag_name('max_loss_work')}, env {env_name('max_loss_work')}"


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
    floating-point or complex input when it is empty."""
    if not grad_inputs:
        return {
            n for n, t in tensors.items()
            if (declared := spec.input(n)) is not None and declared.differentiable and has_grad(t)
        }
    wanted = set()
    for k, sent in enumerate(grad_inputs):
        i = spec.input(sent)
        field = f"grad_inputs[{k}]"
        if i is None or i.name not in tensors:
            raise FieldError(field, f"{sent!r} is not an input of this request; sent: {', '.join(sent_as.values())}")
        if not i.differentiable:
            diff = [x.name for x in spec.inputs if x.differentiable]
            raise FieldError(
                field, f"input {sent!r} of {spec.name} is not differentiable; differentiable: {', '.join(diff)}"
            )
        t = tensors[i.name]
        if not has_grad(t):
            raise FieldError(field, f"input {sent!r} has dtype {WIRE_NAMES.get(t.dtype, str(t.dtype))} and cannot "
                                   "have a gradient (only floating-point and complex inputs can, as in torch)")
        wanted.add(i.name)
    return wanted


def has_grad(t: torch.Tensor) -> bool:
    """Whether autograd can differentiate ``t``: floating-point or complex, as in torch.

    >>> has_grad(torch.tensor([1])), has_grad(torch.tensor([1j]))
    (False, True)
    """
    return t.is_floating_point() or t.is_complex()
