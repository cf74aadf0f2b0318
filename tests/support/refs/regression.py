"""Regression losses: references in local torch and test cases."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from support.parity import Case, Reference, randn

REFERENCES = {
    "mse_loss": Reference(
        functional=lambda t, p: F.mse_loss(t["input"], t["target"], **p),
        module=lambda t, p: nn.MSELoss(**p)(t["input"], t["target"]),
    ),
}

CASES = {
    "mse_loss": [
        Case("matrix", lambda dt: {"input": randn(4, 5, dtype=dt), "target": randn(4, 5, dtype=dt, seed=1)}),
        Case("scalar", lambda dt: {"input": randn(dtype=dt), "target": randn(dtype=dt, seed=1)}),
        Case("empty", lambda dt: {"input": randn(0, 3, dtype=dt), "target": randn(0, 3, dtype=dt)},
             reductions=("none", "sum")),
    ],
}
