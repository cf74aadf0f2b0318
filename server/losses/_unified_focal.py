"""The asymmetric unified focal loss (Yeung et al. 2022) and its two parts, for binary segmentation,
with MONAI's conventions: the asymmetric focal loss (a cross-entropy whose background term alone is
focal) and the asymmetric focal Tversky loss (whose foreground term alone is focal).

Input holds probabilities (MONAI clamps them to [epsilon, 1 - epsilon] and applies no activation,
whatever its docstring says about logits): (N, 2, *) background and foreground, or (N, 1, *) the
foreground alone (made [1 - p, p], as MONAI's unified loss does).

>>> import torch
>>> p = torch.tensor([[[0.9, 0.2]], [[0.3, 0.8]]]).transpose(1, 2)  # (N=2, 2, S=1)
>>> t = torch.tensor([[0], [1]])
>>> asymmetric_focal_loss(p, t, delta=0.7, gamma=2.0, epsilon=1e-7, reduction="mean").item() > 0
True
"""

from __future__ import annotations

import torch

from ._focal import modulating_factor
from ._registry import (
    Equivalent,
    Input,
    Param,
    narrowed,
    register_loss,
    require,
    require_class_indices,
    require_unit_target,
    widened,
)

__all__ = ["asymmetric_focal_loss", "asymmetric_focal_tversky_loss", "asymmetric_unified_focal_loss"]

_INPUTS = (
    Input("input", "prediction", differentiable=True, aliases=("y_pred",),
          doc="probabilities (N, 2, *): background, foreground; or (N, 1, *): foreground"),
    Input("target", "target", kind="float|int", aliases=("y_true",),
          doc="shaped like input (one-hot or mask in [0, 1]), or class indices 0/1 (N, *) (MONAI's to_onehot_y)"),
)
_DELTA = Param("delta", "float", 0.7, "Weight of the foreground (class 1); the background gets 1 - delta.",
               min=0.0, max=1.0)
_EPSILON = Param("epsilon", "float", 1e-7, "Probabilities are clamped to [epsilon, 1 - epsilon] (> 0: keeps log p "
                 "finite); also smooths the Tversky index.", min=0.0, min_exclusive=True, max=0.5, max_exclusive=True)
_REFUSES = (
    "an input not shaped (N, 1, *) or (N, 2, *), or probabilities outside [0, 1]",
    "a target not shaped like input (values in [0, 1]) or (N, *) (class indices 0 or 1)",
)


def _two_channels(input: torch.Tensor, target: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(clamped probabilities, one-hot target), both (N, 2, S). An integer target is a mask or one-hot when shaped
    like input (values 0 or 1), else class indices (N, *)."""
    require(input.dim() >= 2 and input.shape[0] > 0 and input.shape[1] in (1, 2), "inputs.input",
            f"must be (N, 2, *) or (N, 1, *) (binary segmentation), got shape {list(input.shape)}")
    require(
        bool(((input >= 0) & (input <= 1)).all()), "inputs.input", "probabilities must lie in [0, 1] (NaN is refused)"
    )
    n = input.shape[0]
    if target.is_floating_point() or target.shape == input.shape:
        require(target.shape == input.shape, "inputs.target",
                f"shape {list(target.shape)} must be {list(input.shape)} (one-hot or mask) or "
                f"{[n, *input.shape[2:]]} (class indices, an integer dtype)")
        require_unit_target(target, "a mask or one-hot")
        onehot = target.to(input.dtype)
        if input.shape[1] == 1:
            onehot = torch.cat([1 - onehot, onehot], dim=1)
    else:
        expected = [n, *input.shape[2:]]
        require(list(target.shape) == expected, "inputs.target",
                f"shape {list(target.shape)} must be {expected} (class indices) or {list(input.shape)} (one-hot or "
                "mask)")
        require_class_indices(target, 2)
        onehot = torch.nn.functional.one_hot(target.long(), 2).movedim(-1, 1).to(input.dtype)
    if input.shape[1] == 1:
        input = torch.cat([1 - input, input], dim=1)
    probs = input.clamp(epsilon, 1 - epsilon)
    return probs.reshape(n, 2, -1), onehot.reshape(n, 2, -1)


def _focal_terms(probs: torch.Tensor, onehot: torch.Tensor, delta: float, gamma: float) -> torch.Tensor:
    """(N, 2, S): (1 - delta)(1 - p0)^gamma · CE0 and delta · CE1."""
    ce = -onehot * torch.log(probs)
    back = (1 - delta) * (modulating_factor(1 - probs[:, 0], gamma) * ce[:, 0])
    return torch.stack([back, delta * ce[:, 1]], dim=1)


def _tversky_terms(probs: torch.Tensor, onehot: torch.Tensor, delta: float, gamma: float,
                   epsilon: float) -> torch.Tensor:
    """(N, 2): 1 - TI0 and (1 - TI1)^(1 - gamma), TI = (TP + eps) / (TP + delta FN + (1 - delta) FP + eps); half
    types sum in float32 (past 65504 pixels of a class they overflowed float16), so the terms are float32 then."""
    probs, onehot = widened(probs), widened(onehot)
    tp = (onehot * probs).sum(-1)
    fn = (onehot * (1 - probs)).sum(-1)
    fp = ((1 - onehot) * probs).sum(-1)
    index = (tp + epsilon) / (tp + delta * fn + (1 - delta) * fp + epsilon)
    back = 1 - index[:, 0]
    fore = modulating_factor((1 - index[:, 1]).clamp_min(0), 1 - gamma)
    return torch.stack([back, fore], dim=-1)


def _example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[[0.8, 0.3, 0.6, 0.1]], [[0.2, 0.9, 0.4, 0.7]]], dtype=dt),
        "target": torch.tensor([[[1.0, 0.0, 1.0, 0.0]], [[0.0, 1.0, 0.0, 1.0]]], dtype=dt),
    }


@register_loss(
    "asymmetric_focal_loss",
    aliases=("AsymmetricFocalLoss",),
    refuses=_REFUSES,
    inputs=_INPUTS,
    params=(
        _DELTA,
        Param("gamma", "float", 2.0, "Focal exponent of the background term.", min=0.0),
        _EPSILON,
        Param(
            "reduction",
            "string",
            "mean",
            "'mean' or 'sum' over samples, both classes and space, or 'none' (N, 2, *).",
            choices=("none", "mean", "sum"),
        ),
    ),
    description="Asymmetric focal loss (Yeung et al. 2022): background (1 - delta)(1 - p0)^gamma · CE, foreground "
    "delta · CE, not suppressed.",
    source="lossd (Yeung et al. 2022; MONAI AsymmetricFocalLoss conventions)",
    example=_example,
    equivalents=(
        Equivalent(
            "monai.losses.unified_focal_loss.AsymmetricFocalLoss()", {}, "input (N, 2, *) probabilities, target one-hot"
        ),
        Equivalent(
            "monai.losses.unified_focal_loss.AsymmetricFocalLoss(to_onehot_y=True, delta=0.6, gamma=1.5, "
            "reduction='sum')",
            {"delta": 0.6, "gamma": 1.5, "reduction": "sum"},
            "target (N, *) class indices 0/1",
        ),
    ),
)
def asymmetric_focal_loss(input: torch.Tensor, target: torch.Tensor, *, delta: float, gamma: float, epsilon: float,
                          reduction: str) -> torch.Tensor:
    """``-(1 - delta)(1 - p0)^gamma t0 log p0`` and ``-delta t1 log p1`` per pixel; shape (N, 2, *) for 'none'."""
    probs, onehot = _two_channels(input, target, epsilon)
    loss = _focal_terms(probs, onehot, delta, gamma)
    if reduction == "none":
        return loss.reshape(input.shape[0], 2, *input.shape[2:])
    return loss.sum() if reduction == "sum" else loss.mean()


@register_loss(
    "asymmetric_focal_tversky_loss",
    aliases=("AsymmetricFocalTverskyLoss",),
    refuses=_REFUSES,
    inputs=_INPUTS,
    params=(
        _DELTA,
        Param("gamma", "float", 0.75, "The foreground term is (1 - TI)^(1 - gamma); at most 1.", min=0.0, max=1.0),
        _EPSILON,
        Param(
            "reduction",
            "string",
            "mean",
            "'mean' or 'sum' over samples and both classes, or 'none' (N, 2).",
            choices=("none", "mean", "sum"),
        ),
    ),
    description="Asymmetric focal Tversky loss (Yeung et al. 2022): background 1 - TI, foreground "
    "(1 - TI)^(1 - gamma), per sample; FN weighted delta, FP 1 - delta.",
    source="lossd (Yeung et al. 2022; MONAI AsymmetricFocalTverskyLoss conventions)",
    notes="The foreground power is guarded: its gradient is 0, not NaN, on a perfect prediction.",
    example=_example,
    equivalents=(
        Equivalent(
            "monai.losses.unified_focal_loss.AsymmetricFocalTverskyLoss()",
            {},
            "input (N, 2, *) probabilities, target one-hot",
        ),
        Equivalent(
            "monai.losses.unified_focal_loss.AsymmetricFocalTverskyLoss(to_onehot_y=True, reduction='none')",
            {"reduction": "none"},
            "target (N, *) class indices 0/1",
        ),
    ),
)
def asymmetric_focal_tversky_loss(input: torch.Tensor, target: torch.Tensor, *, delta: float, gamma: float,
                                  epsilon: float, reduction: str) -> torch.Tensor:
    """Per sample ``[1 - TI0, (1 - TI1)^(1 - gamma)]``; shape (N, 2) for 'none'. Half precision sums in float32 and
    the loss is cast back."""
    probs, onehot = _two_channels(input, target, epsilon)
    loss = _tversky_terms(probs, onehot, delta, gamma, epsilon)
    loss = loss if reduction == "none" else (loss.sum() if reduction == "sum" else loss.mean())
    return narrowed(loss, input.dtype)


@register_loss(
    "asymmetric_unified_focal_loss",
    aliases=("AsymmetricUnifiedFocalLoss", "unified_focal_loss"),
    refuses=_REFUSES,
    inputs=_INPUTS,
    params=(
        Param("weight", "float", 0.5, "weight · asymmetric focal + (1 - weight) · asymmetric focal Tversky.",
              min=0.0, max=1.0),
        _DELTA,
        Param("gamma", "float", 0.5, "The focal exponent of both parts (at most 1).", min=0.0, max=1.0),
        _EPSILON,
    ),
    description="Asymmetric unified focal loss (Yeung et al. 2022): weight · asymmetric focal + (1 - weight) · "
    "asymmetric focal Tversky, each their mean.",
    source="lossd (Yeung et al. 2022; MONAI AsymmetricUnifiedFocalLoss conventions)",
    notes="MONAI's reduction has no effect on this loss (both parts are means; the result is a scalar).",
    example=_example,
    equivalents=(
        Equivalent("monai.losses.AsymmetricUnifiedFocalLoss()", {},
                   "input (N, 1, *) or (N, 2, *) probabilities (MONAI applies no sigmoid), target shaped like input"),
        Equivalent("monai.losses.AsymmetricUnifiedFocalLoss(to_onehot_y=True, weight=0.3, gamma=0.25, delta=0.6)",
                   {"weight": 0.3, "gamma": 0.25, "delta": 0.6},
                   "input (N, 2, *), target (N, *) class indices 0/1 (MONAI: (N, 1, *))"),
    ),
)
def asymmetric_unified_focal_loss(input: torch.Tensor, target: torch.Tensor, *, weight: float, delta: float,
                                  gamma: float, epsilon: float) -> torch.Tensor:
    """``weight · mean(asymmetric focal) + (1 - weight) · mean(asymmetric focal Tversky)``."""
    probs, onehot = _two_channels(input, target, epsilon)
    focal = _focal_terms(probs, onehot, delta, gamma).mean()
    tversky = _tversky_terms(probs, onehot, delta, gamma, epsilon).mean()
    loss = weight * focal + (1 - weight) * tversky
    return narrowed(loss, input.dtype)
