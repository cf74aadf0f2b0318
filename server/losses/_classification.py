"""Classification losses from ``torch.nn``: cross entropy, NLL, BCE, KL, margin losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._registry import REDUCTION, Input, Param, register_loss, require

__all__: list[str] = []


def _class_targets(input: torch.Tensor, target: torch.Tensor, ignore_index: int, field: str = "inputs.target") -> None:
    """Class-index targets must lie in [0, C) (or equal ignore_index)."""
    n_classes = input.shape[1] if input.dim() > 1 else input.shape[0]
    valid = ((target >= 0) & (target < n_classes)) | (target == ignore_index)
    require(valid.all(), field, f"class indices must lie in [0, {n_classes}) or equal ignore_index ({ignore_index})")


def _ce_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]], dtype=dt),
        "target": torch.tensor([0, 2]),
    }


@register_loss(
    "cross_entropy",
    aliases=("CrossEntropyLoss", "ce", "softmax_cross_entropy"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",),
              doc="unnormalized logits, (C), (N, C) or (N, C, d1, ..., dK)"),
        Input("target", "target", kind="float|int", differentiable=True, aliases=("y_true",),
              doc="class indices (int, shape (N) or (N, d1, ..., dK)) or class probabilities (float, same shape as input)"),
        Input("weight", "class weight", required=False, doc="rescaling weight per class, shape (C)"),
    ),
    params=(
        REDUCTION,
        Param("ignore_index", "int", -100, "Target value that is ignored (class-index targets only)."),
        Param("label_smoothing", "float", 0.0, "Amount of smoothing towards the uniform distribution.", min=0.0, max=1.0),
    ),
    description="Cross entropy between logits and class indices or class probabilities.",
    source="torch.nn.functional.cross_entropy",
    example=_ce_example,
)
def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    *,
    reduction: str,
    ignore_index: int,
    label_smoothing: float,
) -> torch.Tensor:
    if not target.is_floating_point():
        _class_targets(input, target, ignore_index)
    return F.cross_entropy(input, target, weight, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
