"""Image similarity for registration (MONAI's, from DeepReg): the local normalized cross-correlation
(the squared correlation of prediction and target within a moving window, negated and averaged; 1-D,
2-D and 3-D images (N, C, *spatial)) and the global mutual information of their intensities
(Parzen-window histograms, Gaussian or B-spline).

>>> import torch
>>> img = torch.arange(16.0).reshape(1, 1, 4, 4) % 5
>>> local_normalized_cross_correlation_loss(img, 2 * img + 1, kernel_size=3, kernel_type="rectangular",
...     smooth_nr=0.0, smooth_dr=1e-5, reduction="mean").item() < -0.9
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._registry import Equivalent, Input, Param, narrowed, register_loss, require, require_same_shape, widened

__all__ = ["global_mutual_information_loss", "local_normalized_cross_correlation_loss"]

#: Most Parzen weights (N × pixels × bins) one request's histograms may hold.
MAX_PARZEN_WEIGHTS = 2**25


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
    """``-(cross² + smooth_nr) / (var_t · var_p)`` per pixel (see notes). Half precision is computed in float32 and
    the loss cast back: window sums of squares and the window volume (41³) overflowed float16, and the variances
    cancel."""
    require(3 <= input.dim() <= 5 and input.shape[1] > 0, "inputs.input",
            f"must be (N, C, *spatial) with 1 to 3 spatial dims, got shape {list(input.shape)}")
    require_same_shape(input, target, "the correlation is local, pixel by pixel")
    require(kernel_size % 2 == 1, "params.kernel_size", f"is {kernel_size}; must be odd (a centred window)")
    x, y = widened(input), widened(target)
    kernel = _window(kernel_size, kernel_type).to(device=input.device)
    volume = (kernel.sum() ** (input.dim() - 2)).to(x.dtype)
    kernel = kernel.to(x.dtype)
    t_sum, p_sum = _filter(y, kernel), _filter(x, kernel)
    t2_sum, p2_sum, tp_sum = _filter(y * y, kernel), _filter(x * x, kernel), _filter(y * x, kernel)
    t_avg, p_avg = t_sum / volume, p_sum / volume
    cross = tp_sum - p_avg * t_sum
    floor = torch.as_tensor(smooth_dr, dtype=x.dtype, device=input.device)
    t_var = torch.max(t2_sum - t_avg * t_sum, floor)
    p_var = torch.max(p2_sum - p_avg * p_sum, floor)
    ncc = (cross * cross + smooth_nr) / (t_var * p_var)
    loss = -ncc if reduction == "none" else (-ncc.sum() if reduction == "sum" else -ncc.mean())
    return narrowed(loss, input.dtype)


def _parzen_gaussian(img: torch.Tensor, num_bins: int, sigma_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights (N, S, bins), probabilities (N, 1, bins)): Gaussian windows on bins spread over [0, 1]."""
    centers = torch.linspace(0.0, 1.0, num_bins, dtype=torch.float64)
    sigma = (centers[1:] - centers[:-1]).mean() * sigma_ratio if num_bins > 1 else torch.tensor(float("nan"))
    preterm = (1 / (2 * sigma**2)).to(img.dtype)
    x = img.clamp(0, 1).reshape(img.shape[0], -1, 1)
    weight = torch.exp(-preterm * (x - centers.to(img.dtype).view(1, 1, -1)) ** 2)
    weight = weight / weight.sum(dim=-1, keepdim=True)
    return weight, weight.mean(dim=-2, keepdim=True)


def _parzen_b_spline(img: torch.Tensor, num_bins: int, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ITK's B-spline Parzen windows (cubic, or the box for order 0) on bins spanning the batch's range,
    padded by 2 bins on each side."""
    padding = 2
    bin_size = (img.max() - img.min()) / (num_bins - 2 * padding)
    norm_min = img.min() / bin_size - padding
    term = (img / bin_size - norm_min).clamp(padding, num_bins - padding - 1).reshape(img.shape[0], -1, 1)
    bins = torch.arange(num_bins, device=img.device).reshape(1, 1, -1)
    distance = (bins - term).abs()
    if order == 0:
        weight = (distance < 0.5).to(img.dtype) + (distance == 0.5).to(img.dtype) * 0.5
    else:
        weight = ((4 - 6 * distance**2 + 3 * distance**3) * (distance < 1) / 6
                  + (2 - distance) ** 3 * ((distance >= 1) & (distance < 2)) / 6)
    weight = weight / weight.sum(dim=-1, keepdim=True)
    return weight, weight.mean(dim=-2, keepdim=True)


@register_loss(
    "global_mutual_information_loss",
    batch_coupled=True,  # 'b-spline' spans its bins over the whole batch's intensity range
    aliases=("GlobalMutualInformationLoss", "gmi_loss"),
    refuses=("a target shaped unlike input, or no pixels", "histograms past the weight limit",
             "b-spline windows on a constant batch (no intensity range)"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred", "pred"),
              doc="images (N, *): each sample's elements are its intensity samples (in [0, 1] for 'gaussian')"),
        Input("target", "target", aliases=("y_true",), doc="images shaped like input"),
    ),
    params=(
        Param("kernel_type", "string", "gaussian", "Parzen window: 'gaussian' (intensities clamped to [0, 1]) or "
              "'b-spline' (cubic for input, box for target, bins over the batch's range; ITK).",
              choices=("gaussian", "b-spline")),
        Param("num_bins", "int", 23, "Histogram bins (b-spline: more than 4).", min=2, max=256),
        Param("sigma_ratio", "float", 0.5, "Gaussian width in bin spacings.", min=0.0, min_exclusive=True),
        Param("smooth_nr", "float", 1e-7, "Added to the joint probability inside the log.", min=0.0),
        Param("smooth_dr", "float", 1e-7, "Added to the product of the marginals, and to the ratio.", min=0.0,
              min_exclusive=True),
        Param("reduction", "string", "mean", "'mean' or 'sum' over samples, or 'none' (N).",
              choices=("none", "mean", "sum")),
    ),
    description="Global mutual information loss: minus the mutual information of input and target intensities "
    "from Parzen-window histograms, per sample (MONAI GlobalMutualInformationLoss).",
    source="lossd (Mattes et al. 2003, DeepReg; MONAI GlobalMutualInformationLoss conventions)",
    notes=f"MI = Σ p_ab · log((p_ab + nr) / (p_a p_b + dr) + dr). The weights and the joint histograms take "
    f"max(N·pixels, N·bins)·bins memory: at most {MAX_PARZEN_WEIGHTS} (INVALID_ARGUMENT past it).",
    example=lambda dt: {
        "input": torch.tensor([[[0.1, 0.5, 0.9], [0.4, 0.8, 0.3]], [[0.7, 0.2, 0.6], [0.3, 0.3, 0.9]]], dtype=dt),
        "target": torch.tensor([[[0.2, 0.4, 1.0], [0.5, 0.7, 0.2]], [[0.9, 0.1, 0.5], [0.2, 0.4, 0.8]]], dtype=dt),
    },
    equivalents=(
        Equivalent("monai.losses.GlobalMutualInformationLoss()", {},
                   "intensities in [0, 1]; MONAI holds its bin centres in float32"),
        Equivalent("monai.losses.GlobalMutualInformationLoss(kernel_type='b-spline', num_bins=16, reduction='none')",
                   {"kernel_type": "b-spline", "num_bins": 16, "reduction": "none"}, ""),
    ),
)
def global_mutual_information_loss(input: torch.Tensor, target: torch.Tensor, *, kernel_type: str, num_bins: int,
                                   sigma_ratio: float, smooth_nr: float, smooth_dr: float,
                                   reduction: str) -> torch.Tensor:
    """``-MI(input, target)`` per sample (see notes). Half precision is computed in float32 and the loss cast back:
    smooth_nr and the joint probabilities underflow float16, and 1 / (p_ab + nr) overflowed (NaN gradients)."""
    require_same_shape(input, target, "the intensities are paired element by element")
    require(input.dim() >= 1 and input.numel() > 0, "inputs.input", "needs a batch of at least one element")
    weights = max(input.numel(), input.shape[0] * num_bins) * num_bins  # the weights, and the N joint histograms
    require(weights <= MAX_PARZEN_WEIGHTS, "inputs.input",
            f"histograms of shape {list(input.shape)} with {num_bins} bins take {weights} weights and cells "
            f"(max(N·pixels, N·bins) · bins); at most {MAX_PARZEN_WEIGHTS} are allowed")
    x, y = widened(input), widened(target)
    if kernel_type == "gaussian":
        wa, pa = _parzen_gaussian(x, num_bins, sigma_ratio)
        wb, pb = _parzen_gaussian(y, num_bins, sigma_ratio)
    else:
        require(num_bins > 4, "params.num_bins", "b-spline windows need more than 4 bins (2 pad each side)")
        for name, img in (("input", x), ("target", y)):
            require(bool(img.max() > img.min()), f"inputs.{name}",
                    "b-spline windows need a range of intensities (max > min over the batch)")
        wa, pa = _parzen_b_spline(x, num_bins, 3)
        wb, pb = _parzen_b_spline(y, num_bins, 0)
    pab = torch.bmm(wa.permute(0, 2, 1), wb.to(wa)).div(wa.shape[1])
    papb = torch.bmm(pa.permute(0, 2, 1), pb.to(pa))
    mi = (pab * torch.log((pab + smooth_nr) / (papb + smooth_dr) + smooth_dr)).sum(dim=(1, 2))
    loss = -mi if reduction == "none" else (-mi.sum() if reduction == "sum" else -mi.mean())
    return narrowed(loss, input.dtype)
