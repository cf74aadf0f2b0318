"""Focal losses: the seed's binary form, torchvision's sigmoid form, and a softmax form.

All three down-weight easy examples by ``(1 - p_t) ** gamma``. For
``0 < gamma < 1`` the naive power has an infinite derivative where
``p_t == 1`` (saturated logits), which turns gradients into NaN; the
modulating factor here is computed with a guarded base so gradients stay
finite and exact elsewhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._registry import (
    REDUCTION,
    Input,
    Param,
    reduce,
    register_loss,
    require,
    require_class_indices,
    require_same_shape,
    require_unit_interval,
)

__all__ = ["modulating_factor"]


def modulating_factor(q: torch.Tensor, gamma: float) -> torch.Tensor:
    """``q ** gamma`` with a finite gradient at ``q == 0`` (``q = 1 - p_t >= 0``).

    >>> modulating_factor(torch.tensor([0.0, 0.25]), 0.5).tolist()
    [0.0, 0.5]
    """
    if gamma == 0:
        return torch.ones_like(q)
    positive = q > 0
    safe = torch.where(positive, q, torch.ones_like(q))
    return torch.where(positive, safe.pow(gamma), torch.zeros_like(q))


_GAMMA = Param("gamma", "float", 2.0, "Focusing parameter: how strongly easy examples are down-weighted.", min=0.0)



def _binary_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([0.9, 0.2, 0.6, 0.05], dtype=dt),
        "target": torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=dt),
    }


@register_loss(
    "binary_focal_loss",
    aliases=("BinaryFocalLoss", "FocalLoss"),
    inputs=(
        Input(
            "input", "prediction", differentiable=True, aliases=("y_pred",), doc="probabilities in [0, 1], any shape"
        ),
        Input("target", "target", differentiable=True, aliases=("y_true",), doc="labels in [0, 1], same shape"),
    ),
    params=(
        _GAMMA,
        Param("alpha", "float", 0.75, "Weight of positive examples (negatives get 1 - alpha).", min=0.0, max=1.0),
        REDUCTION,
    ),
    description="Focal loss on probabilities (the seed's FocalLoss): alpha_t * (1 - p_t)^gamma * BCE.",
    source="lossd (seed's FocalLoss)",
    example=_binary_example,
)
def binary_focal_loss(
    input: torch.Tensor, target: torch.Tensor, *, gamma: float, alpha: float, reduction: str
) -> torch.Tensor:
    """``bce = BCE(input, target)``, ``p_t = t*p + (1-t)*(1-p)``,
    ``alpha_t = t*alpha + (1-t)*(1-alpha)``; loss = ``alpha_t * (1-p_t)^gamma * bce``.

    Shape: input and target any shape, equal; output scalar, or input's shape for 'none'.
    """
    require_same_shape(input, target, "the loss is elementwise")
    require_unit_interval(input, "inputs.input", "probabilities")
    require_unit_interval(target, "inputs.target", "labels")
    bce = F.binary_cross_entropy(input, target, reduction="none")
    p_t = target * input + (1 - target) * (1 - input)
    alpha_t = target * alpha + (1 - target) * (1 - alpha)
    return reduce(alpha_t * modulating_factor(1 - p_t, gamma) * bce, reduction)


def _sigmoid_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([2.0, -1.0, 0.5, -3.0], dtype=dt),
        "target": torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=dt),
    }


@register_loss(
    "sigmoid_focal_loss",
    aliases=("SigmoidFocalLoss", "focal", "focal_loss"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="logits, any shape"),
        Input("target", "target", differentiable=True, aliases=("y_true",), doc="labels in [0, 1], same shape"),
    ),
    params=(
        Param("alpha", "float", 0.25, "Weight of positives in [0, 1]; negative disables weighting.", max=1.0),
        _GAMMA,
        Param("reduction", "string", "mean", "'none', 'mean' (default here; torchvision's default is 'none') or 'sum'.",
              choices=("none", "mean", "sum")),
    ),
    description="Focal loss on logits (torchvision.ops.sigmoid_focal_loss; RetinaNet).",
    source="torchvision.ops.sigmoid_focal_loss (formula)",
    example=_sigmoid_example,
)
def sigmoid_focal_loss(
    input: torch.Tensor, target: torch.Tensor, *, alpha: float, gamma: float, reduction: str
) -> torch.Tensor:
    """``ce = BCEWithLogits(x, t)``, ``p = sigmoid(x)``, ``p_t = p*t + (1-p)*(1-t)``;
    loss = ``ce * (1-p_t)^gamma``, times ``alpha*t + (1-alpha)*(1-t)`` when ``alpha >= 0``.

    With ``gamma=0`` and ``alpha<0`` this is exactly ``binary_cross_entropy_with_logits``.
    """
    require_same_shape(input, target, "the loss is elementwise")
    require_unit_interval(target, "inputs.target", "labels")
    if gamma == 0 and alpha < 0:  # plain BCE-with-logits: let torch reduce, so grads match it bit for bit
        return F.binary_cross_entropy_with_logits(input, target, reduction=reduction)
    loss = F.binary_cross_entropy_with_logits(input, target, reduction="none")
    if gamma != 0:
        # 1 - p_t without cancellation: p + t - 2pt, with p = sigmoid(x).
        p = torch.sigmoid(input)
        q = (p + target - 2 * p * target).clamp_min(0)
        loss = loss * modulating_factor(q, gamma)
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return reduce(loss, reduction)


def _softmax_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0]], dtype=dt),
        "target": torch.tensor([0, 2, 1]),
    }


@register_loss(
    "softmax_focal_loss",
    mean_normalizer="weight",  # 'mean' divides by the total class weight of the samples kept
    aliases=("SoftmaxFocalLoss", "multiclass_focal_loss"),
    inputs=(
        Input(
            "input", "prediction", differentiable=True, aliases=("y_pred",), doc="logits, (N, C) or (N, C, d1, ..., dK)"
        ),
        Input("target", "target", kind="int", aliases=("y_true",), doc="class indices, (N) or (N, d1, ..., dK)"),
        Input("alpha", "class weight", required=False, doc="weight per class, shape (C)"),
    ),
    params=(
        _GAMMA,
        Param("ignore_index", "int", -100, "Target value that is ignored (no loss, no gradient)."),
        Param(
            "reduction",
            "string",
            "mean",
            "'none', 'mean' (over non-ignored elements) or 'sum'.",
            choices=("none", "mean", "sum"),
        ),
    ),
    description="Multi-class focal loss on logits: -alpha[t] * (1 - p_t)^gamma * log p_t.",
    source="lossd (Lin et al. 2017, softmax form)",
    example=_softmax_example,
)
def softmax_focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    alpha: torch.Tensor | None,
    *,
    gamma: float,
    ignore_index: int,
    reduction: str,
) -> torch.Tensor:
    """``logp = log_softmax(x, dim=1)``; per element ``-alpha[t] * (1 - exp(logp_t))^gamma * logp_t``,
    zero where ``t == ignore_index``. 'mean' divides by the number of non-ignored elements.
    """
    require(input.dim() >= 2, "inputs.input", f"must be (N, C) or (N, C, d1, ...), got shape {list(input.shape)}")
    n_classes = input.shape[1]
    expected = [input.shape[0], *input.shape[2:]]
    require(list(target.shape) == expected, "inputs.target", f"shape {list(target.shape)} must be {expected}")
    require_class_indices(target, n_classes, ignore_index)
    keep = target != ignore_index
    if alpha is not None:
        require(list(alpha.shape) == [n_classes], "inputs.alpha", f"shape {list(alpha.shape)} must be [{n_classes}]")
    safe_target = torch.where(keep, target, torch.zeros_like(target))
    logp_t = F.log_softmax(input, dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
    loss = -modulating_factor(-torch.expm1(logp_t), gamma) * logp_t
    if alpha is not None:
        loss = alpha[safe_target] * loss
    loss = torch.where(keep, loss, torch.zeros_like(loss))
    if reduction == "mean":
        return loss.sum() / keep.sum()
    return reduce(loss, reduction)
