"""The generalized Wasserstein Dice loss (Fidon et al. 2017): a Dice loss whose errors are the
Wasserstein distances, under a matrix of distances between classes, between the predicted class
probabilities and the true class of each pixel (MONAI's GeneralizedWassersteinDiceLoss).

>>> import torch
>>> m = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
>>> logits = torch.tensor([[[50.0, -50.0], [-50.0, 50.0]]])  # (N=1, C=2, S=2): class 0, then class 1
>>> generalized_wasserstein_dice_loss(logits, torch.tensor([[0, 1]]), m, weighting_mode="default",
...     smooth_nr=1e-5, smooth_dr=1e-5, reduction="mean").item() < 1e-6
True
"""

from __future__ import annotations

import torch

from ._registry import (
    Equivalent,
    Input,
    Param,
    narrowed,
    register_loss,
    require,
    require_class_indices,
    require_finite,
    widened,
)

__all__ = ["generalized_wasserstein_dice_loss"]


def _example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor(
            [[[2.0, -1.0], [0.5, 0.1], [-1.0, 1.5]], [[0.3, 1.0], [1.2, -0.4], [0.0, 0.2]]], dtype=dt
        ),
        "target": torch.tensor([[0, 2], [1, 1]]),
        "dist_matrix": torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.5], [1.0, 0.5, 0.0]], dtype=dt),
    }


_M = "M = [[0, 1, 1], [1, 0, 0.5], [1, 0.5, 0]]"


@register_loss(
    "generalized_wasserstein_dice_loss",
    aliases=("GeneralizedWassersteinDiceLoss", "generalised_wasserstein_dice_loss", "wasserstein_dice_loss"),
    refuses=(
        "an input without a class dimension (N, C, *)",
        "targets not shaped (N, *) or class indices outside [0, C)",
        "a dist_matrix not shaped (C, C), with a negative or non-finite entry, or all zero",
    ),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",),
              doc="logits (N, C, *): softmax over dim 1 gives the class probabilities"),
        Input("target", "target", kind="int", aliases=("y_true",),
              doc="class indices (N, *) (MONAI's (N, 1, *) without its channel)"),
        Input("dist_matrix", "class distances",
              doc="(C, C) distances between classes, >= 0; divided by its largest entry (MONAI)"),
    ),
    params=(
        Param("weighting_mode", "string", "default",
              "'default': true positives of the foreground classes count (class 0 is background, weight 0; Fidon "
              "et al.); 'GDL': each class weighted by 1 / (its target volume + 1), in numerator and denominator "
              "(Tilborghs et al. 2020).", choices=("default", "GDL")),
        Param("smooth_nr", "float", 1e-5, "Added to the numerator.", min=0.0),
        Param("smooth_dr", "float", 1e-5, "Added to the denominator.", min=0.0),
        Param("reduction", "string", "mean", "'mean' or 'sum' over samples, or 'none' (N).",
              choices=("none", "mean", "sum")),
    ),
    description="Generalized Wasserstein Dice (Fidon et al. 2017): Dice with Wasserstein errors under a class "
    "distance matrix, one score per sample.",
    source="lossd (Fidon et al. 2017; MONAI GeneralizedWassersteinDiceLoss conventions)",
    notes="Per pixel, the error is W = Σ_c M[t, c] · p_c (M divided by its largest entry). 'default': "
    "TP = Σ α_t (1 - W) with α = 0 for class 0 and 1 otherwise, loss = 1 - (2 TP + nr) / (2 TP + Σ W + dr); "
    "'GDL': α_c = 1 / (volume_c + 1) per sample, denominator Σ α_t (2 - W) + dr.",
    example=_example,
    equivalents=(
        Equivalent("monai.losses.GeneralizedWassersteinDiceLoss(dist_matrix=M)", {},
                   f"send M as input dist_matrix (here {_M}); target (N, *) class indices"),
        Equivalent("monai.losses.GeneralizedWassersteinDiceLoss(dist_matrix=M, weighting_mode='GDL', "
                   "reduction='none')", {"weighting_mode": "GDL", "reduction": "none"},
                   "MONAI computes the GDL weights in float32"),
    ),
)
def generalized_wasserstein_dice_loss(input: torch.Tensor, target: torch.Tensor, dist_matrix: torch.Tensor, *,
                                      weighting_mode: str, smooth_nr: float, smooth_dr: float,
                                      reduction: str) -> torch.Tensor:
    """Per sample ``1 - (2 TP + smooth_nr) / (denominator + smooth_dr)`` (see the notes); shape (N) for 'none'.
    Half precision is computed in float32 and the loss cast back: the sums over pixels and the class volumes
    overflowed float16 (a loss of 1 with zero gradients)."""
    require(input.dim() >= 2 and input.shape[0] > 0 and input.shape[1] > 0, "inputs.input",
            f"must be (N, C, *) with N, C >= 1, got shape {list(input.shape)}")
    n, c = input.shape[:2]
    expected = [n, *input.shape[2:]]
    require(list(target.shape) == expected, "inputs.target", f"shape {list(target.shape)} must be {expected}")
    require_class_indices(target, c)
    require(list(dist_matrix.shape) == [c, c], "inputs.dist_matrix",
            f"shape {list(dist_matrix.shape)} must be [{c}, {c}] (one row and column per class of input)")
    require_finite(dist_matrix, "inputs.dist_matrix")
    require(bool((dist_matrix >= 0).all()), "inputs.dist_matrix", "distances must be >= 0")
    largest = dist_matrix.max()
    require(bool(largest > 0), "inputs.dist_matrix", "must have an entry > 0 (it is divided by its largest)")
    x = widened(input)
    m = (dist_matrix / largest if bool(largest != 1) else dist_matrix).to(x.dtype)
    probs = x.reshape(n, c, -1).softmax(dim=1)
    flat = target.reshape(n, -1)
    wass = (m[flat] * probs.transpose(1, 2)).sum(-1)  # (N, S): Σ_c M[t, c] p_c
    if weighting_mode == "GDL":
        volumes = torch.nn.functional.one_hot(flat, c).sum(1).to(x.dtype)  # (N, C)
        alpha_t = (1 / (volumes + 1)).gather(1, flat)
        true_pos = (alpha_t * (1 - wass)).sum(-1)
        denominator = (alpha_t * (2 - wass)).sum(-1)
    else:
        alpha_t = (flat != 0).to(x.dtype)
        true_pos = (alpha_t * (1 - wass)).sum(-1)
        denominator = 2 * true_pos + wass.sum(-1)
    loss = 1 - (2 * true_pos + smooth_nr) / (denominator + smooth_dr)
    loss = loss if reduction == "none" else (loss.sum() if reduction == "sum" else loss.mean())
    return narrowed(loss, input.dtype)
