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
