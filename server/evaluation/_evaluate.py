"""One evaluation on torch tensors: bind, run the loss forward, and backward.

:func:`evaluate` is what the RPC layer (:mod:`lossd.server.rpc`), the unit
tests and the parity harness call; it raises
:class:`~lossd.server.losses.FieldError` naming the field and the rule::

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

from ..._wire import FieldError
from ..losses import LossSpec, Registry
from ._binding import DEPRECATED_PARAMS, bind_inputs, bind_params, grad_targets

__all__ = ["Evaluation", "call_loss", "evaluate", "resolve_device"]


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
    tensors, sent_as = bind_inputs(spec, inputs)
    kwargs = bind_params(spec, params, refused=DEPRECATED_PARAMS)
    wanted = grad_targets(spec, tensors, sent_as, grad_inputs)

    if device is not None and device.type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    leaves = {}
    for name, t in tensors.items():
        if name in wanted:
            t = t.detach().requires_grad_(True)
            leaves[name] = t
        tensors[name] = t

    start = time.perf_counter()
    with torch.enable_grad():
        out = call_loss(spec, tensors, kwargs)
    forward_s = time.perf_counter() - start

    grads: dict[str, torch.Tensor] = {}
    start = time.perf_counter()
    if leaves:
        upstream = _grad_output(out, grad_output)
        found: Sequence[torch.Tensor | None]
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


_UNSUPPORTED_MARKERS = ("not implemented for", "\"_vml_cpu\" not implemented", "unsupported dtype")


def call_loss(spec: LossSpec, tensors: Mapping[str, torch.Tensor], kwargs: dict[str, Any]) -> torch.Tensor:
    """``spec``'s function on bound inputs (``None`` for each absent optional one) and params;
    torch's own errors become ``FieldError`` (``UNIMPLEMENTED`` for what torch cannot do on this
    server, else ``INVALID_ARGUMENT``)."""
    inputs: dict[str, torch.Tensor | None] = {i.name: None for i in spec.inputs}
    inputs.update(tensors)
    try:
        out = spec.fn(**inputs, **kwargs)
    except FieldError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if any(m in text for m in _UNSUPPORTED_MARKERS):
            raise FieldError("inputs", f"{spec.name}: torch on this server cannot do this: {text}", "UNIMPLEMENTED") from e
        raise FieldError("inputs", f"{spec.name} rejected the inputs: {text}") from e
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"loss {spec.name} returned {type(out).__name__}, not a tensor")
    return out


def _grad_output(out: torch.Tensor, grad_output: torch.Tensor | None) -> torch.Tensor:
    if grad_output is None:
        return torch.ones_like(out)
    if tuple(grad_output.shape) != tuple(out.shape):
        raise FieldError("grad_output", f"has shape {list(grad_output.shape)}; the loss has shape {list(out.shape)}")
    if not grad_output.is_floating_point():
        raise FieldError("grad_output", "must have a floating-point dtype")
    return grad_output.to(device=out.device, dtype=out.dtype)
