"""Lovász losses (Berman et al. 2018): the convex Lovász extension of the Jaccard loss,
binary (hinge on logits) and multi-class (on softmax probabilities).

The errors are sorted, so the loss is piecewise linear in them; its gradient is exact
wherever no two errors tie.

>>> import torch
>>> lovasz_hinge_loss(torch.tensor([[3.0, -3.0]]), torch.tensor([[1.0, 0.0]]), per_image=True,
...                   ignore_index=None).item()  # every margin above 1: no loss
0.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ._registry import (
    HALF_DTYPES,
    Equivalent,
    Input,
    Param,
    Work,
    register_loss,
    register_split_name,
    require,
    require_class_indices,
    widened,
)

__all__ = ["lovasz_hinge_loss", "lovasz_softmax_loss"]

_PER_IMAGE = Param(
    "per_image", "bool", True, "Loss per image, then the mean (true), or over the whole batch as one image."
)
_IGNORE = Param("ignore_index", "int", None, "Target value whose pixels are left out (null: none).", nullable=True)


def _jaccard_steps(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension w.r.t. sorted errors (Berman et al., Alg. 1). Half types count in
    float32, as the reference does (``gt_sorted.float()``): float16 counts exactly to 2048 only, bfloat16 to 256.

    >>> len(set(_jaccard_steps(torch.ones(300, dtype=torch.bfloat16)).tolist()))  # 300 equal steps of 1/300
    1
    """
    if gt_sorted.dtype in HALF_DTYPES:
        return _jaccard_steps(widened(gt_sorted)).to(gt_sorted.dtype)
    total = gt_sorted.sum()
    intersection = total - gt_sorted.cumsum(0)
    union = total + (1 - gt_sorted).cumsum(0)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def _hinge_flat(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if labels.numel() == 0:
        return logits.sum() * 0
    errors = 1 - logits * (2 * labels - 1)
    errors_sorted, order = torch.sort(errors, descending=True)
    return torch.dot(torch.relu(errors_sorted), _jaccard_steps(labels[order]))


@register_loss(
    "lovasz_hinge_loss",
    batch_coupled=True,  # sorts the errors of the batch as one image with per_image false
    aliases=("LovaszHingeLoss", "lovasz_hinge"),
    refuses=("an empty batch", "a target not shaped like input without its channel",
             "labels other than 0 and 1 (or ignore_index)"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="logits (N, *) or (N, 1, *)"),
        Input("target", "target", kind="float|int", aliases=("y_true",),
              doc="0/1 mask (N, *) shaped like input without its channel (or ignore_index)"),
    ),
    params=(_PER_IMAGE, _IGNORE),
    description="Lovász hinge loss (binary): the Lovász extension of the Jaccard loss applied to hinge errors.",
    source="lossd (Berman et al. 2018)",
    example=lambda dt: {"input": torch.tensor([[[1.5, -0.5], [0.2, -2.0]], [[-1.0, 2.0], [0.7, 0.1]]], dtype=dt),
                        "target": torch.tensor([[[1, 0], [1, 0]], [[0, 1], [1, 1]]])},
    equivalents=(
        Equivalent("kornia.losses.lovasz_hinge_loss(pred, target)", {}, "pred (N, 1, H, W), target (N, H, W)"),
        Equivalent("segmentation_models_pytorch.losses.LovaszLoss(mode='binary')", {"per_image": False}, ""),
        Equivalent("segmentation_models_pytorch.losses.LovaszLoss(mode='binary', per_image=True, ignore_index=255)",
                   {"ignore_index": 255}, ""),
    ),
)
def lovasz_hinge_loss(
    input: torch.Tensor, target: torch.Tensor, *, per_image: bool, ignore_index: int | None
) -> torch.Tensor:
    """Per image (or the batch): errors ``1 - x·(2y - 1)`` sorted descending, dotted with the Jaccard steps."""
    require(input.dim() >= 1 and input.shape[0] > 0, "inputs.input", "needs a non-empty batch dimension")
    if input.dim() == target.dim() + 1 and input.shape[1] == 1:
        input = input.squeeze(1)
    require(input.shape == target.shape, "inputs.target",
            f"shape {list(target.shape)} must be input's without its channel: {list(input.shape)}")
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    require(bool(((target == 0) | (target == 1) | ~keep).all()), "inputs.target",
            "labels must be 0 or 1" + (f" (or ignore_index {ignore_index})" if ignore_index is not None else ""))
    labels = target.to(input.dtype)
    if not per_image:
        return _hinge_flat(input[keep], labels[keep])
    return torch.stack([_hinge_flat(x[k], y[k]) for x, y, k in zip(input, labels, keep)]).mean()


def _softmax_flat(probs: torch.Tensor, labels: torch.Tensor, classes: str, weights: list[float] | None) -> torch.Tensor:
    """probs (P, C), labels (P,): mean over classes of (weight ×) the Lovász extension of |fg - p|."""
    if labels.numel() == 0:
        return probs.sum() * 0
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).to(probs.dtype)
        if classes == "present" and not bool(fg.any()):
            continue
        errors_sorted, order = torch.sort((fg - probs[:, c]).abs(), descending=True)
        loss = torch.dot(errors_sorted, _jaccard_steps(fg[order]))
        losses.append(loss if weights is None else weights[c] * loss)
    return torch.stack(losses).mean() if losses else probs.sum() * 0


#: What one pass of lovasz_softmax_loss's loop over classes costs besides its share of the pixels, in elements: a
#: dozen torch calls from Python, about 130 µs with the gradient, what 2^26 elements' work (~2 s) takes in 1/8,192 of
#: it. 16,384 classes took 3 s from 33 KB (an audit, 2026-12-06); 8,192 passes fit the work rule.
_PASS_COST = 8192


def _class_passes(bound: Mapping[str, Any], params: Mapping[str, Any]) -> int:
    """lovasz_softmax_loss's loop: a pass per class (and per image, per_image true), each :data:`_PASS_COST`
    elements' work besides sorting its pixels (which the input's size bounds)."""
    n, c = int(bound["input"].shape[0]), int(bound["input"].shape[1])
    return (n if params["per_image"] else 1) * c * _PASS_COST


@register_loss(
    "lovasz_softmax_loss",
    work=Work("a pass per class and image, 8192 elements' work each (C or N · C passes)", "inputs.input",
              _class_passes),
    batch_coupled=True,  # sorts the errors of the batch as one image (per_image false, the default)
    aliases=(),
    refuses=("an input not (N, C, *) with N >= 1", "targets not (N, *)",
             "class indices outside [0, C) other than ignore_index", "class_weights not one per class",
             "probabilities outside [0, 1] with from_logits false"),
    inputs=(
        Input(
            "input", "prediction", differentiable=True, aliases=("y_pred",), doc="logits (or probabilities) (N, C, *)"
        ),
        Input("target", "target", kind="int", aliases=("y_true",), doc="class indices (N, *) (or ignore_index)"),
    ),
    params=(
        Param("per_image", "bool", False, "Loss per image, then the mean, or over the batch as one image (false)."),
        Param(
            "classes",
            "string",
            "present",
            "'present': average over the classes the target contains; 'all'.",
            choices=("present", "all"),
        ),
        Param("from_logits", "bool", True, "Apply softmax over dim 1 first (false: input holds probabilities)."),
        _IGNORE,
        Param(
            "class_weights",
            "float_list",
            None,
            "One weight per class: each class's loss is multiplied before the "
            "mean over classes (kornia's weight). null: none.",
            nullable=True,
        ),
    ),
    description="Lovász-softmax loss (multi-class): per class, the Lovász extension of the Jaccard loss on |fg - p|.",
    source="lossd (Berman et al. 2018)",
    example=lambda dt: {
        "input": torch.tensor([[[1.5, -0.5], [0.2, -2.0], [0.3, 0.9]]], dtype=dt),
        "target": torch.tensor([[0, 2]]),
    },
    equivalents=(
        Equivalent("segmentation_models_pytorch.losses.LovaszLoss(mode='multiclass')", {}, ""),
        Equivalent(
            "kornia.losses.lovasz_softmax_loss(pred, target)",
            {"per_image": True, "classes": "all"},
            "pred (N, C, H, W), target (N, H, W)",
        ),
        Equivalent(
            "kornia.losses.lovasz_softmax_loss(pred, target, weight=w)",
            {"per_image": True, "classes": "all", "class_weights": [1.0, 2.0, 0.5]},
            "class_weights = w",
        ),
        Equivalent(
            "segmentation_models_pytorch.losses.LovaszLoss(mode='multiclass', per_image=True, ignore_index=-1)",
            {"per_image": True, "ignore_index": -1},
            "",
        ),
    ),
)
def lovasz_softmax_loss(input: torch.Tensor, target: torch.Tensor, *, per_image: bool, classes: str, from_logits: bool,
                        ignore_index: int | None, class_weights: list[float] | None) -> torch.Tensor:
    """``p = softmax(x)``; per class c: errors ``|[y = c] - p_c|`` sorted, dotted with the Jaccard steps."""
    require(
        input.dim() >= 2 and input.shape[0] > 0, "inputs.input", f"must be (N, C, *), got shape {list(input.shape)}"
    )
    expected = [input.shape[0], *input.shape[2:]]
    require(list(target.shape) == expected, "inputs.target", f"shape {list(target.shape)} must be {expected}")
    require_class_indices(target, input.shape[1], ignore_index)
    require(class_weights is None or len(class_weights) == input.shape[1], "params.class_weights",
            f"needs one weight per class: {input.shape[1]}")
    if not from_logits:
        require(
            bool(((input >= 0) & (input <= 1)).all()),
            "inputs.input",
            "probabilities must lie in [0, 1] (from_logits=false)",
        )
    probs = input.softmax(1) if from_logits else input
    probs = probs.movedim(1, -1).reshape(input.shape[0], -1, input.shape[1])
    labels = target.reshape(input.shape[0], -1)
    keep = torch.ones_like(labels, dtype=torch.bool) if ignore_index is None else labels != ignore_index
    if not per_image:
        return _softmax_flat(probs[keep], labels[keep], classes, class_weights)
    return torch.stack(
        [_softmax_flat(p[k], y[k], classes, class_weights) for p, y, k in zip(probs, labels, keep)]
    ).mean()


# The class and function names carry their library's defaults, which differ from each other: pointers, not aliases.
register_split_name("LovaszSoftmaxLoss", "lovasz_softmax_loss with per_image true and classes 'all' (kornia's "
                    "LovaszSoftmaxLoss and lovasz_softmax_loss defaults); its own defaults are smp's LovaszLoss "
                    "(mode 'multiclass': per_image false, classes 'present')")
register_split_name("lovasz_softmax", "lovasz_softmax_loss with from_logits false (Berman et al.'s lovasz_softmax "
                    "takes probabilities; per_image false, classes 'present' as here), or kornia's form: per_image "
                    "true, classes 'all'")
