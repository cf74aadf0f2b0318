"""Regression losses: references in local torch and test cases."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from support.parity import Case, Reference, rand, randn


def _elementwise(functional, cls):  # type: ignore[no-untyped-def]
    """l1 / mse / huber: torch 2.13's functional takes ``weight``, the ``torch.nn`` class does not.

    Weighted cases therefore have only the functional form; unweighted ones use the class.
    """

    def module(t, p):  # type: ignore[no-untyped-def]
        if t.get("weight") is not None:
            return functional(t["input"], t["target"], weight=t["weight"], **p)
        return cls(**p)(t["input"], t["target"])

    return Reference(
        functional=lambda t, p: functional(t["input"], t["target"], weight=t.get("weight"), **p),
        module=module,
    )


REFERENCES = {
    "l1_loss": _elementwise(F.l1_loss, nn.L1Loss),
    "mse_loss": _elementwise(F.mse_loss, nn.MSELoss),
    "huber_loss": _elementwise(F.huber_loss, nn.HuberLoss),
    "smooth_l1_loss": Reference(
        functional=lambda t, p: F.smooth_l1_loss(t["input"], t["target"], **p),
        module=lambda t, p: nn.SmoothL1Loss(**p)(t["input"], t["target"]),
    ),
    "poisson_nll_loss": Reference(
        functional=lambda t, p: F.poisson_nll_loss(t["input"], t["target"], **p),
        module=lambda t, p: nn.PoissonNLLLoss(**p)(t["input"], t["target"]),
    ),
    "gaussian_nll_loss": Reference(
        functional=lambda t, p: F.gaussian_nll_loss(t["input"], t["target"], t["var"], **p),
        module=lambda t, p: nn.GaussianNLLLoss(**p)(t["input"], t["target"], t["var"]),
    ),
}


def _pair(*shape: int):  # type: ignore[no-untyped-def]
    return lambda dt: {"input": randn(*shape, dtype=dt), "target": randn(*shape, dtype=dt, seed=1)}


def _weighted(*shape: int):  # type: ignore[no-untyped-def]
    return lambda dt: {"input": randn(*shape, dtype=dt), "target": randn(*shape, dtype=dt, seed=1),
                       "weight": rand(*shape, dtype=dt, seed=2, low=0.1, high=2.0)}


def _wide(dt: torch.dtype) -> dict[str, torch.Tensor]:
    """Errors on both sides of 1 (and of 0.5, 2): every branch of the piecewise losses."""
    return {"input": 2 * randn(3, 4, dtype=dt), "target": randn(3, 4, dtype=dt, seed=1)}


def _counts(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.poisson(torch.full(shape, 2.0, dtype=torch.float64), generator=torch.Generator().manual_seed(seed))


CASES = {
    "l1_loss": [
        Case("matrix", _pair(4, 5)),
        Case("weighted", _weighted(3, 4)),
        Case("scalar", _pair()),
        Case("k-dimensional", _pair(2, 3, 2, 2)),
        Case("empty", _pair(0, 3), reductions=("none", "sum")),
    ],
    "mse_loss": [
        Case("matrix", _pair(4, 5)),
        Case("weighted", _weighted(3, 4)),
        Case("scalar", _pair()),
        Case("empty", _pair(0, 3), reductions=("none", "sum")),
    ],
    "smooth_l1_loss": [
        Case("default-beta", _wide),
        Case("beta-0.5", _wide, params={"beta": 0.5}),
        Case("beta-0-is-l1", _wide, params={"beta": 0.0}),
        Case("vector-beta-2", _pair(6), params={"beta": 2.0}),
    ],
    "huber_loss": [
        Case("default-delta", _wide),
        Case("delta-0.5", _wide, params={"delta": 0.5}),
        Case("weighted-delta-2", lambda dt: {**_wide(dt), "weight": rand(3, 4, dtype=dt, seed=2, low=0.1, high=2.0)},
             params={"delta": 2.0}),
        Case("vector", _pair(6)),
    ],
    "poisson_nll_loss": [
        Case("log-input", lambda dt: {"input": randn(3, 4, dtype=dt), "target": _counts(3, 4).to(dt)}),
        Case("log-input-full", lambda dt: {"input": randn(3, 4, dtype=dt), "target": _counts(3, 4).to(dt)},
             params={"full": True}),
        Case("rate", lambda dt: {"input": rand(3, 4, dtype=dt, low=0.1, high=4.0), "target": _counts(3, 4).to(dt)},
             params={"log_input": False}),
        Case("rate-full-eps", lambda dt: {"input": rand(2, 5, dtype=dt, low=0.0, high=3.0),
                                          "target": _counts(2, 5, seed=4).to(dt)},
             params={"log_input": False, "full": True, "eps": 1e-3}),
    ],
    "gaussian_nll_loss": [
        Case("heteroscedastic", lambda dt: {"input": randn(4, 3, dtype=dt), "target": randn(4, 3, dtype=dt, seed=1),
                                            "var": rand(4, 3, dtype=dt, seed=2, low=0.1, high=2.0)}),
        Case("var-one-fewer-dim-full", lambda dt: {"input": randn(4, 3, dtype=dt),
                                                    "target": randn(4, 3, dtype=dt, seed=1),
                                                    "var": rand(4, dtype=dt, seed=2, low=0.1, high=2.0)},
             params={"full": True}),
        Case("var-dim-1", lambda dt: {"input": randn(2, 3, 4, dtype=dt), "target": randn(2, 3, 4, dtype=dt, seed=1),
                                      "var": rand(2, 1, 4, dtype=dt, seed=2, low=0.1, high=2.0)}),
        Case("target-dim-1", lambda dt: {"input": randn(4, 3, dtype=dt), "target": randn(4, 1, dtype=dt, seed=1),
                                         "var": rand(4, 3, dtype=dt, seed=2, low=0.1, high=2.0)}),
        Case("var-clamped-eps", lambda dt: {"input": randn(5, dtype=dt), "target": randn(5, dtype=dt, seed=1),
                                            "var": torch.tensor([0.0, 1e-4, 0.5, 1.0, 2.0], dtype=dt)},
             params={"eps": 1e-2}),
    ],
}
