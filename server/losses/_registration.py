"""Image similarity for registration: the local normalized cross-correlation (MONAI's
LocalNormalizedCrossCorrelationLoss, from DeepReg): the squared correlation of prediction and target
within a moving window, negated and averaged. 1-D, 2-D and 3-D images (N, C, *spatial).

>>> import torch
>>> img = torch.arange(16.0).reshape(1, 1, 4, 4) % 5
>>> local_normalized_cross_correlation_loss(img, 2 * img + 1, kernel_size=3, kernel_type="rectangular",
...     smooth_nr=0.0, smooth_dr=1e-5, reduction="mean").item() < -0.9
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._registry import Equivalent, Input, Param, register_loss, require, require_same_shape

__all__ = ["local_normalized_cross_correlation_loss"]


def _window(kernel_size: int, kernel_type: str) -> torch.Tensor:
    """MONAI's 1-D windows (float64): ones; a box convolved with itself; exp(-x²/2σ²), σ = size / 3."""
    if kernel_type == "rectangular":
        return torch.ones(kernel_size, dtype=torch.float64)
    if kernel_type == "triangular":
        fsize = (kernel_size + 1) // 2
        fsize -= 1 if fsize % 2 == 0 else 0
        box = torch.full((1, 1, fsize), 1.0 / fsize, dtype=torch.float64)
        return F.conv1d(box, box, padding=(kernel_size - fsize) // 2 + fsize // 2).reshape(-1)
    sigma = kernel_size / 3.0
    x = torch.arange(-(kernel_size // 2), kernel_size // 2 + 1, dtype=torch.float64)
    return torch.exp(-0.5 / (sigma * sigma) * x**2)


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable window sums, zero padding, same size: the first spatial dim first (MONAI's separable_filtering)."""
    d, c = x.dim() - 2, x.shape[1]
    conv = (F.conv1d, F.conv2d, F.conv3d)[d - 1]
    pad = (kernel.numel() - 1) // 2
    for axis in range(d):
        shape = [1] * d
        shape[axis] = -1
        padding = [0] * d
        padding[axis] = pad
        x = conv(x, kernel.reshape(1, 1, *shape).repeat(c, 1, *[1] * d), groups=c, padding=tuple(padding))
    return x


@register_loss(
    "local_normalized_cross_correlation_loss",
    aliases=("LocalNormalizedCrossCorrelationLoss", "lncc_loss", "LNCCLoss"),
    refuses=("an input not shaped (N, C, *spatial) with 1 to 3 spatial dims", "a target shaped unlike input"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred", "pred"),
              doc="images (N, C, *spatial), 1 to 3 spatial dims"),
        Input("target", "target", aliases=("y_true",), doc="images shaped like input"),
    ),
    params=(
        Param("kernel_size", "int", 3, "Window edge (odd).", min=1, max=51),
        Param("kernel_type", "string", "rectangular", "Window weights: 'rectangular', 'triangular' or 'gaussian' "
              "(σ = kernel_size / 3).", choices=("rectangular", "triangular", "gaussian")),
        Param("smooth_nr", "float", 0.0, "Added to the squared covariance.", min=0.0),
        Param("smooth_dr", "float", 1e-5, "Lower bound of each local variance (> 0: a flat window would divide by 0).",
              min=0.0, min_exclusive=True),
        Param("reduction", "string", "mean", "'mean' or 'sum' over every pixel, or 'none' (the input's shape).",
              choices=("none", "mean", "sum")),
    ),
    description="Local normalized cross-correlation loss: minus the squared correlation of input and target in "
    "each window (MONAI LocalNormalizedCrossCorrelationLoss).",
    source="lossd (DeepReg / MONAI LocalNormalizedCrossCorrelationLoss conventions)",
    notes="Per pixel, with window sums S (weighted by the window, zero padding) and V = Σ of the window's weights: "
    "cross = S[tp] - S[p]·S[t]/V, var_x = max(S[x²] - S[x]²/V, smooth_dr); loss = -(cross² + smooth_nr) / "
    "(var_t·var_p). MONAI's spatial_dims is the input's.",
    example=lambda dt: {
        "input": torch.tensor([[[[0.1, 0.5, 0.9], [0.4, 0.8, 0.3], [0.7, 0.2, 0.6]]]], dtype=dt),
        "target": torch.tensor([[[[0.2, 0.4, 1.0], [0.5, 0.7, 0.2], [0.9, 0.1, 0.5]]]], dtype=dt),
    },
    equivalents=(
        Equivalent("monai.losses.LocalNormalizedCrossCorrelationLoss(spatial_dims=2)", {}, "images (N, C, H, W)"),
        Equivalent("monai.losses.LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=5, "
                   "kernel_type='gaussian', reduction='none')",
                   {"kernel_size": 5, "kernel_type": "gaussian", "reduction": "none"},
                   "MONAI builds its windows in float32"),
    ),
)
def local_normalized_cross_correlation_loss(input: torch.Tensor, target: torch.Tensor, *, kernel_size: int,
                                            kernel_type: str, smooth_nr: float, smooth_dr: float,
                                            reduction: str) -> torch.Tensor:
    """``-(cross² + smooth_nr) / (var_t · var_p)`` per pixel (see notes)."""
    require(3 <= input.dim() <= 5 and input.shape[1] > 0, "inputs.input",
            f"must be (N, C, *spatial) with 1 to 3 spatial dims, got shape {list(input.shape)}")
    require_same_shape(input, target, "the correlation is local, pixel by pixel")
    require(kernel_size % 2 == 1, "params.kernel_size", f"is {kernel_size}; must be odd (a centred window)")
    kernel = _window(kernel_size, kernel_type).to(device=input.device)
    volume = (kernel.sum() ** (input.dim() - 2)).to(input.dtype)
    kernel = kernel.to(input.dtype)
    t_sum, p_sum = _filter(target, kernel), _filter(input, kernel)
    t2_sum, p2_sum, tp_sum = _filter(target * target, kernel), _filter(input * input, kernel), _filter(target * input,
                                                                                                      kernel)
    t_avg, p_avg = t_sum / volume, p_sum / volume
    cross = tp_sum - p_avg * t_sum
    floor = torch.as_tensor(smooth_dr, dtype=input.dtype, device=input.device)
    t_var = torch.max(t2_sum - t_avg * t_sum, floor)
    p_var = torch.max(p2_sum - p_avg * p_sum, floor)
    ncc = (cross * cross + smooth_nr) / (t_var * p_var)
    return -ncc if reduction == "none" else (-ncc.sum() if reduction == "sum" else -ncc.mean())
