"""The shared parity harness: every registry entry against local torch.

Each loss has a :class:`Reference` (how local torch computes it, in functional
and in ``torch.nn`` class form) and one or more :class:`Case` (input tensors
and params). ``tests/integration/test_parity.py`` runs every case, in float32
and float64, for every reduction, through a real server and compares value
and gradients with local torch exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

Tensors = Mapping[str, torch.Tensor]
Call = Callable[[Tensors, Mapping[str, Any]], torch.Tensor]


@dataclass(frozen=True)
class Case:
    """Inputs for one loss. ``make(dtype)`` returns tensors by input name, floats in ``dtype``.

    ``reductions``: None means every value the loss's ``reduction`` schema allows.
    """

    id: str
    make: Callable[[torch.dtype], dict[str, torch.Tensor]]
    params: dict[str, Any] = field(default_factory=dict)
    reductions: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Reference:
    """How local torch computes a loss: ``functional(tensors, params)`` and the class form.

    ``module`` builds the ``torch.nn`` class with the params (and tensor ctor
    args such as ``weight``) and calls it; ``None`` only when torch has no class form.
    ``exact``: torch's own losses must match bit for bit; losses lossd defines
    are checked against a formula written independently in the test, to a
    tolerance (float64: 1e-12 relative).
    """

    functional: Call
    module: Call | None
    exact: bool = True


def seeded(seed: int) -> torch.Generator:
    """A CPU generator for reproducible test tensors."""
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Standard normal samples in float64, then cast: the same numbers in every dtype."""
    return torch.randn(shape, generator=seeded(seed), dtype=torch.float64).to(dtype)


def rand(*shape: int, dtype: torch.dtype, seed: int = 0, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Uniform samples in [low, high), float64 then cast."""
    return (low + (high - low) * torch.rand(shape, generator=seeded(seed), dtype=torch.float64)).to(dtype)


def randint(high: int, *shape: int, seed: int = 0) -> torch.Tensor:
    """int64 samples in [0, high)."""
    return torch.randint(0, high, shape, generator=seeded(seed))


#: Every dtype the wire carries that a loss input may take: the dtype sweep's axis.
SWEEP_DTYPES: tuple[torch.dtype, ...] = (
    torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.complex64, torch.complex128,
    torch.int64, torch.int32, torch.uint8, torch.bool,
)


def cast_case(tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A case's floating-point tensors in ``dtype`` (integer tensors, class indices, stay as they are).

    Complex gets an imaginary part (the real part rolled by one) so that it matters; integer and
    bool dtypes truncate, as ``Tensor.to`` does. Local torch decides whether the result is valid.

    >>> cast_case({"input": torch.tensor([0.5, 2.0]), "target": torch.tensor([1])}, torch.complex64)["input"]
    tensor([0.5000+2.0000j, 2.0000+0.5000j])
    """
    out = {}
    for name, t in tensors.items():
        if not t.is_floating_point():
            out[name] = t
        elif dtype.is_complex:
            wide = t.to(torch.float64)
            out[name] = torch.complex(wide, wide.flatten().roll(1).reshape(wide.shape)).to(dtype)
        else:
            out[name] = t.to(dtype)
    return out


def local_outcome(
    functional: Call, tensors: Mapping[str, torch.Tensor], params: Mapping[str, Any], diff: list[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
    """Local torch: the loss, the gradients of ``diff`` (ones upstream) and the warnings' texts.

    Raises whatever torch raises for inputs it does not compute.
    """
    import warnings

    leaves = {n: (t.clone().requires_grad_(True) if n in diff else t.clone()) for n, t in tensors.items()}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = functional(leaves, params)
        grads: dict[str, torch.Tensor] = {}
        if diff and out.requires_grad:
            found = torch.autograd.grad(out, [leaves[n] for n in diff], torch.ones_like(out), allow_unused=True)
            grads = {n: torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(diff, found)}
        elif diff:
            grads = {n: torch.zeros_like(leaves[n]) for n in diff}
    return out.detach(), grads, [str(w.message) for w in seen]
