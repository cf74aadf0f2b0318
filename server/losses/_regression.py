"""Regression losses from ``torch.nn``: l1, mse, smooth L1, Huber, Poisson and Gaussian NLL."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._registry import REDUCTION, Input, register_loss

__all__: list[str] = []

_PRED = Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="predictions, any shape")
_TARGET = Input("target", "target", differentiable=True, aliases=("y_true",), doc="targets, same shape as input")


def _pair(dt: torch.dtype) -> dict[str, torch.Tensor]:
    return {
        "input": torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], dtype=dt),
        "target": torch.tensor([[1.0, -1.0, 0.0], [2.0, 0.5, -2.0]], dtype=dt),
    }


@register_loss(
    "mse_loss",
    aliases=("MSELoss", "mse", "l2_loss"),
    inputs=(_PRED, _TARGET),
    params=(REDUCTION,),
    description="Mean squared error: (input - target)^2, reduced.",
    source="torch.nn.functional.mse_loss",
    example=_pair,
)
def mse_loss(input: torch.Tensor, target: torch.Tensor, *, reduction: str) -> torch.Tensor:
    return F.mse_loss(input, target, reduction=reduction)
