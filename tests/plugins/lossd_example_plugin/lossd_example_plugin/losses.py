"""Two losses an operator adds without touching lossd: a function and an nn.Module."""

import torch

from lossd.server.losses import REDUCTION, Input, Param, reduce, register_loss, require

PRED = Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="predictions")
TARGET = Input("target", "target", differentiable=True, aliases=("y_true",), doc="targets, same shape")


def _example(dt):
    return {"input": torch.tensor([1.0, 2.0, 4.0], dtype=dt), "target": torch.tensor([1.5, 2.0, 3.0], dtype=dt)}


@register_loss("rmse_loss", aliases=("RMSELoss", "rmse"), inputs=(PRED, TARGET), params=(),
               description="Root mean squared error.", example=_example)
def rmse_loss(input, target):
    """sqrt(mean((input - target)^2))."""
    require(input.shape == target.shape, "inputs.target", "must have input's shape")
    return torch.sqrt(torch.mean((input - target) ** 2))


@register_loss("smooth_abs_loss", aliases=("SmoothAbsLoss",), inputs=(PRED, TARGET),
               params=(Param("eps", "float", 1e-3, "Smoothing constant.", min=0.0, min_exclusive=True), REDUCTION),
               description="A smooth |x - y|: sqrt((x - y)^2 + eps^2).", example=_example)
class SmoothAbsLoss(torch.nn.Module):
    """sqrt((input - target)^2 + eps^2), reduced."""

    def __init__(self, eps, reduction):
        super().__init__()
        self.eps, self.reduction = eps, reduction

    def forward(self, input, target):
        return reduce(torch.sqrt((input - target) ** 2 + self.eps**2), self.reduction)
