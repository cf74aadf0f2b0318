"""Robust regression losses and the Wing loss: independent references from the published formulas."""

from __future__ import annotations

import math

import torch

from support.parity import Case, Reference, randn


def _reduce(x, reduction):
    return {"mean": x.mean, "sum": x.sum}.get(reduction, lambda: x)()


def _rho(formula):
    def ref(t, p):
        x = (t["input"] - t["target"]) / p.get("scale", 1.0)
        return _reduce(formula(x), p.get("reduction", "mean"))

    return ref


def wing(t, p):
    w, eps = p.get("width", 5.0), p.get("curvature", 0.5)
    d = (t["target"] - t["input"]).abs()
    c = w - w * math.log(1 + w / eps)
    return _reduce(torch.where(d < w, w * torch.log(1 + d / eps), d - c), p.get("reduction", "mean"))


REFERENCES = {
    "charbonnier_loss": Reference(_rho(lambda x: (x ** 2 + 1.0).sqrt() - 1.0), None, exact=False),
    "welsch_loss": Reference(_rho(lambda x: 1.0 - torch.exp(-0.5 * x ** 2)), None, exact=False),
    "cauchy_loss": Reference(_rho(lambda x: torch.log(0.5 * x ** 2 + 1)), None, exact=False),
    "geman_mcclure_loss": Reference(_rho(lambda x: 2.0 * x ** 2 / (x ** 2 + 4.0)), None, exact=False),
    "wing_loss": Reference(wing, None, exact=False),
}

CASES = {
    **{name: [
        Case("unit-scale", lambda dt: {"input": randn(3, 4, dtype=dt, seed=1), "target": randn(3, 4, dtype=dt, seed=2)}),
        Case("scaled", lambda dt: {"input": 3 * randn(5, dtype=dt, seed=3), "target": randn(5, dtype=dt, seed=4)},
             params={"scale": 0.5}, reductions=("mean",)),
    ] for name in ("charbonnier_loss", "welsch_loss", "cauchy_loss", "geman_mcclure_loss")},
    "wing_loss": [
        Case("both-branches", lambda dt: {"input": 4 * randn(3, 4, dtype=dt, seed=5), "target": randn(3, 4, dtype=dt, seed=6)},
             params={"width": 2.0, "curvature": 1.0}),
        Case("defaults", lambda dt: {"input": randn(6, dtype=dt, seed=7), "target": randn(6, dtype=dt, seed=8)},
             reductions=("mean",)),
    ],
}
