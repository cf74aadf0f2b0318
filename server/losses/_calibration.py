"""Neighbor-aware calibration (NACL, Murugesan et al. 2023/2024): cross-entropy plus a penalty that
pulls each logit towards the class proportions of the pixel's neighbourhood (the one-hot target
smoothed by a mean or Gaussian filter), MONAI's NACLLoss. 2-D and 3-D.

>>> import torch
>>> logits = torch.zeros(1, 2, 3, 3)
>>> nacl_loss(logits, torch.zeros(1, 3, 3, dtype=torch.long), kernel_size=3, kernel_ops="mean",
...           distance_type="l1", alpha=0.0, sigma=1.0).item() == torch.log(torch.tensor(2.0)).item()
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ._registry import (
    Equivalent,
    Input,
    Param,
    Work,
    narrowed,
    register_loss,
    require,
    require_class_indices,
    widened,
)

__all__ = ["nacl_loss"]


def _gaussian_1d(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """MONAI's gaussian_1d, 'erf' approximation, truncated at 4 sigma, unnormalized."""
    tail = int(max(sigma * 4.0, 0.5) + 0.5)
    x = torch.arange(-tail, tail + 1, dtype=torch.float64, device=device)
    t = 0.70710678 / abs(sigma)
    return (0.5 * (torch.erf(t * (x + 0.5)) - torch.erf(t * (x - 0.5)))).clamp_min(0).to(dtype)


def _smoothed_onehot(target: torch.Tensor, n_classes: int, dtype: torch.dtype, kernel_size: int, kernel_ops: str,
                     sigma: float) -> torch.Tensor:
    """The one-hot target (N, C, *spatial), each class filtered (zero padding, same size)."""
    onehot = F.one_hot(target, n_classes).movedim(-1, 1).to(dtype)
    d = target.dim() - 1
    conv = F.conv2d if d == 2 else F.conv3d
    if kernel_ops == "mean":
        weight = torch.full((n_classes, 1, *[kernel_size] * d), 1.0 / kernel_size**d, dtype=dtype, device=target.device)
        before = (kernel_size - 1) // 2  # 'same' size, as torch's padding='same' (more after for even kernels)
        return conv(F.pad(onehot, [before, kernel_size - 1 - before] * d), weight, groups=n_classes)
    kernel = _gaussian_1d(sigma, dtype, target.device)
    pad = (kernel.numel() - 1) // 2
    out = onehot
    for axis in range(d):  # separable, first spatial dim first
        shape = [1] * d
        shape[axis] = -1
        weight = kernel.reshape(1, 1, *shape).repeat(n_classes, 1, *[1] * d)
        padding = [0] * d
        padding[axis] = pad
        out = conv(out, weight, groups=n_classes, padding=tuple(padding))
    return out


def _padded_onehot(bound: Mapping[str, Any], params: Mapping[str, Any]) -> int:
    """The elements of nacl_loss's padded one-hot target: N · C · Π(side + window - 1), the window the mean
    filter's kernel_size or the Gaussian's 8 sigma (a tiny volume padded by 30 on each side grows 30,000-fold)."""
    input = bound["input"]
    if input.dim() not in (4, 5):
        return 0
    if params["kernel_ops"] == "mean":
        window = int(params["kernel_size"])
    else:
        window = 2 * int(max(float(params["sigma"]) * 4.0, 0.5) + 0.5) + 1
    n, c, *spatial = (int(s) for s in input.shape)
    return n * c * math.prod(side + window - 1 for side in spatial)


@register_loss(
    "nacl_loss",
    work=Work("the padded one-hot target (N · C · Π(side + window - 1))", "inputs.input", _padded_onehot),
    aliases=("NACLLoss", "nacl", "neighbor_aware_calibration_loss"),
    refuses=(
        "an input not shaped (N, C, H, W) or (N, C, D, H, W)",
        "targets not shaped (N, *spatial) or class indices outside [0, C)",
    ),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",),
              doc="logits (N, C, H, W) or (N, C, D, H, W)"),
        Input("target", "target", kind="int", aliases=("y_true",), doc="class indices (N, H, W) or (N, D, H, W)"),
    ),
    params=(
        Param("kernel_size", "int", 3, "Edge of the mean filter (kernel_ops 'mean').", min=1, max=31),
        Param("kernel_ops", "string", "mean", "How the one-hot target is smoothed: 'mean' or 'gaussian' filter.",
              choices=("mean", "gaussian")),
        Param("distance_type", "string", "l1", "Penalty: mean |smoothed target - logits| ('l1') or its square "
              "('l2').", choices=("l1", "l2")),
        Param("alpha", "float", 0.1, "Weight of the penalty.", min=0.0),
        Param("sigma", "float", 1.0, "Standard deviation of the Gaussian filter (kernel_ops 'gaussian'; truncated at "
              "4 sigma).", min=0.0, min_exclusive=True, max=8.0),
    ),
    description="Neighbor-aware calibration loss (NACL): mean cross-entropy + alpha · mean distance between the "
    "logits and the neighbourhood class proportions.",
    source="lossd (Murugesan et al. 2023; MONAI NACLLoss conventions)",
    notes="MONAI's classes and dim are read from the input's shape. Both terms are means over every pixel "
    "(and class, for the penalty).",
    example=lambda dt: {
        "input": torch.tensor([[[[2.0, 0.5, -1.0], [0.3, 1.2, 0.1]], [[-0.5, 1.0, 2.0], [0.8, -0.2, 0.4]]]], dtype=dt),
        "target": torch.tensor([[[0, 1, 1], [0, 0, 1]]]),
    },
    equivalents=(
        Equivalent("monai.losses.NACLLoss(classes=3, dim=2)", {}, "MONAI computes the smoothed target in float32"),
        Equivalent("monai.losses.NACLLoss(classes=3, dim=3, kernel_ops='gaussian', distance_type='l2', alpha=0.5, "
                   "sigma=0.8)", {"kernel_ops": "gaussian", "distance_type": "l2", "alpha": 0.5, "sigma": 0.8}, ""),
    ),
)
def nacl_loss(input: torch.Tensor, target: torch.Tensor, *, kernel_size: int, kernel_ops: str, distance_type: str,
              alpha: float, sigma: float) -> torch.Tensor:
    """``cross_entropy(input, target) + alpha · mean(|filter(onehot(target)) - input|^(1 or 2))``. Half precision is
    computed in float32 and the loss cast back: torch's float16 cross-entropy broke past 65504 pixels (0, inf, NaN)."""
    require(input.dim() in (4, 5) and input.shape[0] > 0 and input.shape[1] > 0, "inputs.input",
            f"must be (N, C, H, W) or (N, C, D, H, W), got shape {list(input.shape)}")
    expected = [input.shape[0], *input.shape[2:]]
    require(list(target.shape) == expected, "inputs.target", f"shape {list(target.shape)} must be {expected}")
    require_class_indices(target, input.shape[1])
    x = widened(input)
    smoothed = _smoothed_onehot(target, input.shape[1], x.dtype, kernel_size, kernel_ops, sigma)
    gap = smoothed - x
    penalty = gap.abs().mean() if distance_type == "l1" else gap.pow(2).mean()
    loss = F.cross_entropy(x, target) + alpha * penalty
    return narrowed(loss, input.dtype)


