"""The boundary loss (Kervadec et al. 2019), MONAI's BoundaryLoss: the prediction weighted by the
signed distance to the target's boundary (negative inside, positive outside), averaged over pixels.
The distance maps are exact Euclidean, computed in torch (no gradient: they depend on the target only).

>>> import torch
>>> target = torch.zeros(1, 1, 1, 4)
>>> target[..., :2] = 1.0
>>> (signed_distance_map(target > 0.5) + 0.0).flatten().tolist()  # inside -(distance - 1), outside distance
[-1.0, 0.0, 1.0, 2.0]
"""

from __future__ import annotations

import torch

from ._cldice import _ACTIVATION, _INCLUDE_BG, _prepare
from ._image import MAX_DISTANCE_WORK, _squared_distance_to
from ._registry import Equivalent, Input, LossError, Param, register_loss, require

__all__ = ["boundary_loss", "signed_distance_map"]


def signed_distance_map(mask: torch.Tensor) -> torch.Tensor:
    """For (N, C, *spatial) booleans: per channel, -(distance to the nearest False pixel - 1) inside and the
    distance to the nearest True pixel outside; 0 for a channel that is all True or all False (MONAI)."""
    n, c, *spatial = mask.shape
    flat = mask.reshape(n * c, *spatial)
    inside = _squared_distance_to(~flat).sqrt()
    outside = _squared_distance_to(flat).sqrt()
    signed = torch.where(flat, -(inside - 1), outside)
    per = flat.reshape(n * c, -1)
    mixed = (per.any(1) & ~per.all(1)).view(-1, *([1] * len(spatial)))
    return torch.where(mixed, signed, torch.zeros_like(signed)).reshape(mask.shape)


@register_loss(
    "boundary_loss",
    aliases=("BoundaryLoss", "boundary"),
    refuses=(
        "an input not shaped (N, C, H, W) or (N, C, D, H, W)",
        "a target not shaped like input (values in [0, 1]) or (N, *spatial) (class indices in [0, C))",
        "probabilities outside [0, 1] with activation 'none'",
        "distance transforms over the work limit",
    ),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",),
              doc="(N, C, H, W) or (N, C, D, H, W): probabilities, or logits with activation sigmoid/softmax"),
        Input("target", "target", kind="float|int", aliases=("y_true",),
              doc="shaped like input (one-hot or masks; a pixel is inside where > 0.5), or class indices "
                  "(N, *spatial) (MONAI's to_onehot_y, without its channel)"),
    ),
    params=(
        _ACTIVATION,
        _INCLUDE_BG,
        Param("batch", "bool", False, "Average the per-sample losses over the batch, one per class (MONAI's batch)."),
        Param("reduction", "string", "mean", "'mean' or 'sum' over samples and classes, or 'none': (N, C) "
              "((C) with batch).", choices=("none", "mean", "sum")),
    ),
    description="Boundary loss (Kervadec et al. 2019): mean over pixels of the prediction times the signed "
    "distance to the target's boundary, per sample and class.",
    source="lossd (Kervadec et al. 2019; MONAI BoundaryLoss conventions; distance transforms in torch)",
    notes=f"Distances are exact Euclidean in pixels. The work is bounded: N·C·pixels·(H + W [+ D]) at most "
    f"{MAX_DISTANCE_WORK} (INVALID_ARGUMENT past it). The loss is negative where the prediction fills the "
    "target's interior.",
    example=lambda dt: {
        "input": torch.tensor([[[[0.9, 0.8, 0.2], [0.7, 0.6, 0.1], [0.2, 0.1, 0.1]]]], dtype=dt),
        "target": torch.tensor([[[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]], dtype=dt),
    },
    equivalents=(
        Equivalent("monai.losses.BoundaryLoss()", {},
                   "input holds probabilities; MONAI holds the distances in float32"),
        Equivalent("monai.losses.BoundaryLoss(softmax=True, to_onehot_y=True, include_background=False, batch=True, "
                   "reduction='none')",
                   {"activation": "softmax", "include_background": False, "batch": True, "reduction": "none"},
                   "target (N, *spatial) class indices (MONAI: (N, 1, *spatial))"),
    ),
)
def boundary_loss(input: torch.Tensor, target: torch.Tensor, *, activation: str, include_background: bool,
                  batch: bool, reduction: str) -> torch.Tensor:
    """``Σ_pixels p · φ(t) / pixels`` per sample and class, φ the signed distance map of ``t > 0.5``."""
    require(input.dim() in (4, 5), "inputs.input",
            f"must be (N, C, H, W) or (N, C, D, H, W), got shape {list(input.shape)}")
    work = input.numel() * sum(input.shape[2:])
    if work > MAX_DISTANCE_WORK:
        raise LossError("inputs.input", f"distance transforms of shape {list(input.shape)} take {work} steps "
                        f"(N·C·pixels·Σ sides); at most {MAX_DISTANCE_WORK} are allowed")
    probs, onehot = _prepare(input, target, activation, include_background)
    with torch.no_grad():
        distance = signed_distance_map(onehot > 0.5).to(input.dtype)
    spatial = list(range(2, probs.dim()))
    pixels = 1
    for s in probs.shape[2:]:
        pixels *= s
    loss = (probs * distance).sum(spatial) / pixels
    if batch:
        loss = loss.mean(0)
    return loss if reduction == "none" else (loss.sum() if reduction == "sum" else loss.mean())
