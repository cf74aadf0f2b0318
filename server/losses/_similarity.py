"""Image similarity and smoothness losses with kornia's conventions: negative PSNR, total variation,
the (normalized) mutual information of a Parzen-window joint histogram, the KL and Jensen-Shannon
divergences of heatmaps, and the image-aware inverse depth smoothness loss.

>>> import torch
>>> x = torch.tensor([[0.0, 1.0], [1.0, 3.0]])
>>> total_variation_loss(x, pixels="sum", reduction="none").item()  # |1-0| + |3-1| + |1-0| + |3-1|
6.0
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._registry import Equivalent, Input, Param, narrowed, register_loss, require, require_same_shape, widened

__all__ = [
    "psnr_loss",
    "total_variation_loss",
    "mutual_information_loss",
    "normalized_mutual_information_loss",
    "kl_div_loss_2d",
    "js_div_loss_2d",
    "inverse_depth_smoothness_loss",
    "MAX_HISTOGRAM_WORK",
]

_PAIR = (
    Input("input", "prediction", differentiable=True, aliases=("y_pred", "image"), doc="images, any shape"),
    Input("target", "target", differentiable=True, aliases=("y_true",), doc="images, the input's shape"),
)


def _reduce_last(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    return loss.mean() if reduction == "mean" else (loss.sum() if reduction == "sum" else loss)


@register_loss(
    "psnr_loss",
    batch_coupled=True,  # the log of one MSE pooled over the batch
    aliases=("PSNRLoss",),
    refuses=("a target shaped unlike the input",),
    inputs=_PAIR,
    params=(
        Param("max_val", "float", 1.0, "Data range of the images, MAX_I (1 for [0, 1], 255 for [0, 255]).",
              min=0.0, min_exclusive=True),
    ),
    description="Negative peak signal-to-noise ratio: -10·log10(max_val² / MSE), one MSE over every element.",
    source="lossd (kornia psnr_loss formula)",
    notes="One MSE pooled over batch and channels (kornia), not a mean of per-image PSNRs. Identical images: "
    "loss -inf (kornia), gradient 0 (the loss is not differentiable there).",
    example=lambda dt: {"input": torch.tensor([[0.1, 0.5], [0.9, 0.3]], dtype=dt),
                        "target": torch.tensor([[0.0, 0.6], [1.0, 0.2]], dtype=dt), "params": {"max_val": 1.0}},
    equivalents=(
        Equivalent("kornia.losses.psnr_loss(image, target, max_val=2.0)", {"max_val": 2.0}, ""),
        Equivalent("kornia.losses.PSNRLoss(max_val=1.0)", {}, ""),
    ),
)
def psnr_loss(input: torch.Tensor, target: torch.Tensor, *, max_val: float) -> torch.Tensor:
    """``-10·log10(max_val² / mean((input - target)²))``; ``-inf`` with a zero gradient where the MSE is 0.
    Half precision is computed in float32 and the loss cast back: max_val² / MSE overflowed float16 past 48 dB."""
    require_same_shape(input, target, "PSNR compares images element by element")
    require(max_val <= 1e18, "params.max_val", f"is {max_val:g}; must be at most 1e18 (its square must be finite "
            "in float32: 1e300 overflowed)")
    mse = F.mse_loss(widened(input), widened(target))
    positive = mse > 0
    safe = torch.where(positive, mse, torch.ones_like(mse))
    loss = -10.0 * torch.log10(max_val**2 / safe)
    loss = torch.where(positive, loss, torch.full_like(loss, -math.inf))
    dtype = torch.promote_types(input.dtype, target.dtype)
    return narrowed(loss, dtype)


@register_loss(
    "total_variation_loss",
    aliases=("total_variation", "TotalVariation"),
    refuses=("an input with fewer than 2 dimensions (*, H, W)",),
    inputs=(Input("input", "prediction", differentiable=True, aliases=("y_pred", "img"),
                  doc="images (*, H, W): every leading dimension (batch, channels) keeps its own value"),),
    params=(
        Param("pixels", "string", "sum",
              "'sum' of the absolute differences (kornia's default), or 'mean': each of the vertical and horizontal "
              "terms averaged over its own count, then added (kornia's reduction='mean').", choices=("sum", "mean")),
        Param("reduction", "string", "none",
              "'none': one value per leading index (*), kornia's output (default); 'mean' or 'sum' over them.",
              choices=("none", "mean", "sum")),
    ),
    description="Anisotropic total variation: Σ|∂_y I| + Σ|∂_x I| over the last two axes, per image and channel.",
    source="lossd (Rudin et al. 1992; kornia total_variation formula)",
    notes="An axis of length 1 has no differences and adds 0 (kornia). kornia's TotalVariation module always sums "
    "over pixels; its reduction argument is the pixels parameter here.",
    example=lambda dt: {"input": torch.tensor([[[[0.0, 0.5, 1.0], [0.2, 0.4, 0.6], [1.0, 0.0, 0.5]]]], dtype=dt)},
    equivalents=(
        Equivalent("kornia.losses.TotalVariation()(img)", {}, "img (N, C, H, W): output (N, C)"),
        Equivalent("kornia.losses.total_variation(img, reduction='mean')", {"pixels": "mean"}, ""),
    ),
)
def total_variation_loss(input: torch.Tensor, *, pixels: str, reduction: str) -> torch.Tensor:
    """``Σ|I[i+1, j] - I[i, j]| + Σ|I[i, j+1] - I[i, j]|`` per leading index (each term a mean with 'mean')."""
    require(input.dim() >= 2, "inputs.input", f"must be images (*, H, W), got shape {list(input.shape)}")
    vertical = (input[..., 1:, :] - input[..., :-1, :]).abs().flatten(-2)
    horizontal = (input[..., :, 1:] - input[..., :, :-1]).abs().flatten(-2)
    if pixels == "mean":
        terms = [t.mean(-1) if t.shape[-1] else t.sum(-1) for t in (vertical, horizontal)]
    else:
        terms = [vertical.sum(-1), horizontal.sum(-1)]
    return _reduce_last(terms[0] + terms[1], reduction)


#: Most kernel evaluations (signals × samples × bins) one mutual-information request may take.
MAX_HISTOGRAM_WORK = 2**24


def _xu(d: torch.Tensor, radius: float) -> torch.Tensor:
    """Xu et al. 2008's second-order kernel on [-radius, radius]."""
    u = d.abs() / radius
    inner = u * (-1.8 * u - 0.1) + 1.0
    outer = u * (1.8 * u - 3.7) + 1.9
    return torch.where(u < 0.5, inner, torch.where(u <= 1.0, outer, torch.zeros_like(u)))


def _rectangular(d: torch.Tensor, radius: float) -> torch.Tensor:
    return (d.abs() <= radius).to(d.dtype)


def _truncated_gaussian(d: torch.Tensor, radius: float) -> torch.Tensor:
    density = torch.exp(-0.5 * (d / radius) ** 2) / (radius * math.sqrt(2 * math.pi))
    return torch.where(d.abs() <= radius, density, torch.zeros_like(density))


_KERNELS = {"xu": _xu, "rectangular": _rectangular, "truncated_gaussian": _truncated_gaussian}


def _bin_positions(signal: torch.Tensor, num_bins: int, eps: float) -> torch.Tensor:
    """Min-max normalised to [0, num_bins - 1] per signal; a signal whose range is at most eps: all 0."""
    low, high = signal.min(dim=-1).values, signal.max(dim=-1).values
    spread = (high - low).unsqueeze(-1)
    varies = spread > eps
    safe = torch.where(varies, spread, torch.ones_like(spread))
    return torch.where(varies, (signal - low.unsqueeze(-1)) / safe * (num_bins - 1), torch.zeros_like(signal))


def _entropies(input: torch.Tensor, target: torch.Tensor, signal_dims: int, kernel: str, num_bins: int,
               window_radius: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(H(input), H(target), H(input, target)) per signal, in nats, from a Parzen-window joint histogram."""
    require(input.dim() >= signal_dims, "inputs.input",
            f"needs at least signal_dims ({signal_dims}) dimensions, got shape {list(input.shape)}")
    require_same_shape(input, target, "each input signal is compared with its own target signal")
    lead = input.shape[: input.dim() - signal_dims]
    length = math.prod(input.shape[input.dim() - signal_dims:])
    require(length > 0, "inputs.input", "signals must not be empty")
    work = math.prod(lead) * max(length, num_bins) * num_bins  # the kernel's weights, and the joint histograms
    require(work <= MAX_HISTOGRAM_WORK, "inputs.input",
            f"{math.prod(lead)} signals of {length} samples × {num_bins} bins take {work} kernel evaluations and "
            f"histogram cells (signals × max(samples, bins) × bins); at most {MAX_HISTOGRAM_WORK} are allowed")
    eps = torch.finfo(input.dtype).eps
    x, y = widened(input), widened(target)
    x, y = x.reshape(*lead, length), y.reshape(*lead, length)
    centres = torch.arange(num_bins, dtype=x.dtype, device=x.device).unsqueeze(-1)
    k = _KERNELS[kernel]
    weights_y = k(centres - _bin_positions(y, num_bins, eps).unsqueeze(-2), window_radius)
    weights_x = k(centres - _bin_positions(x, num_bins, eps).unsqueeze(-2), window_radius)
    joint = torch.einsum("...in,...jn->...ij", weights_y, weights_x).clamp(torch.finfo(x.dtype).eps)
    joint = joint / joint.sum(dim=(-1, -2), keepdim=True)
    p_x, p_y = joint.sum(dim=-2), joint.sum(dim=-1)
    h_xy = -(joint * joint.log()).sum(dim=(-1, -2))
    return -(p_x * p_x.log()).sum(-1), -(p_y * p_y.log()).sum(-1), h_xy


_MI_PARAMS = (
    Param("signal_dims", "int", 1,
          "How many trailing dimensions form one signal: 1 (kornia's …_loss, MILossFromRef), 2 (…_loss_2d, "
          "MILossFromRef2D: images (*, H, W)) or 3 (…_loss_3d: volumes (*, D, H, W)); one loss per leading index.",
          min=1, max=3),
    Param("kernel", "string", "xu",
          "Parzen window (kornia's MIKernel): 'xu' (Xu et al. 2008), 'truncated_gaussian' (σ = window_radius), or "
          "'rectangular' (piecewise constant: zero gradient).", choices=tuple(_KERNELS)),
    Param("num_bins", "int", 64, "Histogram bins per signal.", min=2, max=1024),
    Param("window_radius", "float", 1.0, "Kernel support, in bin widths.", min=0.0, min_exclusive=True),
    Param("reduction", "string", "none",
          "'none': one loss per leading index (kornia's output, default); 'mean' or 'sum' over them.",
          choices=("none", "mean", "sum")),
)
_MI_REFUSES = ("a target shaped unlike the input", "fewer dimensions than signal_dims, or empty signals",
               f"more than {MAX_HISTOGRAM_WORK} kernel evaluations and joint histogram cells "
               "(signals × max(samples, num_bins) × num_bins)")
_MI_NOTES = ("Each signal is min-max normalised to the bins (so no data range is assumed); a signal whose range is at "
             "most the dtype's eps counts as constant. Half precision is computed in float32. kornia's masks "
             "(input_mask, target_mask) are not expressible; MONAI's GlobalMutualInformationLoss is another "
             "estimator (not this one).")


def _mi_example(dt: torch.dtype) -> dict[str, object]:
    return {"input": torch.tensor([[0.1, 0.5, 0.9, 0.3, 0.7, 0.2]], dtype=dt),
            "target": torch.tensor([[0.2, 0.4, 1.0, 0.1, 0.8, 0.3]], dtype=dt), "params": {"num_bins": 8}}


@register_loss(
    "mutual_information_loss",
    aliases=("MILossFromRef",),
    refuses=_MI_REFUSES,
    inputs=_PAIR,
    params=_MI_PARAMS,
    description="Negative mutual information H(X) + H(Y) - H(X, Y) (nats) of a Parzen-window joint histogram.",
    source="lossd (Parzen-window MI, Xu et al. 2008; kornia mutual_information_loss formula)",
    notes=_MI_NOTES,
    example=_mi_example,
    equivalents=(
        Equivalent("kornia.losses.mutual_information_loss(input, target)", {}, "input, target (B, N)"),
        Equivalent("kornia.losses.mutual_information_loss_2d(input, target, num_bins=16)",
                   {"signal_dims": 2, "num_bins": 16}, "images (B, C, H, W): output (B, C)"),
        Equivalent("kornia.losses.MILossFromRef3D(target, kernel_function=MIKernel.truncated_gaussian, "
                   "window_radius=2.0)(input)",
                   {"signal_dims": 3, "kernel": "truncated_gaussian", "window_radius": 2.0}, "volumes (B, D, H, W)"),
    ),
)
def mutual_information_loss(input: torch.Tensor, target: torch.Tensor, *, signal_dims: int, kernel: str,
                            num_bins: int, window_radius: float, reduction: str) -> torch.Tensor:
    """``-(H(X) + H(Y) - H(X, Y))`` per signal; the joint histogram ``Σ_n K(i - y_n) K(j - x_n)``, floored at eps."""
    h_x, h_y, h_xy = _entropies(input, target, signal_dims, kernel, num_bins, window_radius)
    loss = (-(h_x + h_y - h_xy)).to(input.dtype)
    return _reduce_last(loss, reduction)


@register_loss(
    "normalized_mutual_information_loss",
    aliases=("NMILossFromRef",),
    refuses=_MI_REFUSES,
    inputs=_PAIR,
    params=_MI_PARAMS,
    description="Negative normalized mutual information (H(X) + H(Y)) / H(X, Y) (Studholme et al. 1999), in "
    "[-2, -1].",
    source="lossd (Studholme et al. 1999; kornia normalized_mutual_information_loss formula)",
    notes=_MI_NOTES,
    example=_mi_example,
    equivalents=(
        Equivalent("kornia.losses.normalized_mutual_information_loss_2d(input, target)", {"signal_dims": 2},
                   "images (B, H, W): output (B)"),
        Equivalent("kornia.losses.NMILossFromRef(target, num_bins=32)(input)", {"num_bins": 32}, ""),
    ),
)
def normalized_mutual_information_loss(input: torch.Tensor, target: torch.Tensor, *, signal_dims: int, kernel: str,
                                       num_bins: int, window_radius: float, reduction: str) -> torch.Tensor:
    """``-(H(X) + H(Y)) / H(X, Y)`` per signal, the histogram as in mutual_information_loss."""
    h_x, h_y, h_xy = _entropies(input, target, signal_dims, kernel, num_bins, window_radius)
    loss = (-(h_x + h_y) / h_xy).to(input.dtype)
    return _reduce_last(loss, reduction)


def _kl_per_map(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per (N, C) map over its pixels, 0·log 0 = 0: where p is 0 (and q finite, >= 0) the term is 0
    with no gradient."""
    p, q = p.flatten(2), q.flatten(2)  # (N, C, pixels): an empty batch too (reshape(0, -1) is ambiguous)
    nothing = (p == 0) & (q >= 0) & torch.isfinite(q)
    p, q = p.masked_fill(nothing, 1.0), q.masked_fill(nothing, 1.0)
    return F.kl_div(q.log(), p, reduction="none").sum(-1)


_HEATMAPS = (
    Input("input", "prediction", differentiable=True, aliases=("y_pred", "pred"),
          doc="heatmaps (N, C, H, W): each map a distribution over its pixels (values >= 0)"),
    Input("target", "target", differentiable=True, aliases=("y_true",), doc="heatmaps, the input's shape"),
)
_HEATMAP_REFUSES = ("inputs not (N, C, H, W)", "a target shaped unlike the input", "negative values")
_HEATMAP_REDUCTION = Param("reduction", "string", "mean", "'mean' or 'sum' over maps, or 'none' (N, C).",
                           choices=("none", "mean", "sum"))


def _check_heatmaps(input: torch.Tensor, target: torch.Tensor) -> None:
    require(input.dim() == 4, "inputs.input", f"must be heatmaps (N, C, H, W), got shape {list(input.shape)}")
    require_same_shape(input, target, "each map is compared with its own target map")
    require(bool((input >= 0).all()), "inputs.input", "heatmaps must be >= 0 (NaN is refused)")
    require(bool((target >= 0).all()), "inputs.target", "heatmaps must be >= 0 (NaN is refused)")


def _heatmap_example(dt: torch.dtype) -> dict[str, object]:
    return {"input": torch.tensor([[[[0.1, 0.2], [0.3, 0.4]]]], dtype=dt),
            "target": torch.tensor([[[[0.25, 0.25], [0.0, 0.5]]]], dtype=dt)}


@register_loss(
    "kl_div_loss_2d",
    refuses=_HEATMAP_REFUSES,
    inputs=_HEATMAPS,
    params=(_HEATMAP_REDUCTION,),
    description="KL divergence KL(target ‖ input) of each heatmap, summed over its pixels (kornia kl_div_loss_2d).",
    source="lossd (kornia kl_div_loss_2d formula)",
    notes="0·log 0 = 0 where the target is 0; the maps are not renormalised. A target pixel > 0 where the input is 0 "
    "gives +inf.",
    example=_heatmap_example,
    equivalents=(Equivalent("kornia.losses.kl_div_loss_2d(pred, target)", {}, ""),),
)
def kl_div_loss_2d(input: torch.Tensor, target: torch.Tensor, *, reduction: str) -> torch.Tensor:
    """``Σ_pixels t·(log t - log p)`` per map."""
    _check_heatmaps(input, target)
    return _reduce_last(_kl_per_map(target, input), reduction)


@register_loss(
    "js_div_loss_2d",
    refuses=_HEATMAP_REFUSES,
    inputs=_HEATMAPS,
    params=(_HEATMAP_REDUCTION,),
    description="Jensen-Shannon divergence of each heatmap pair: ½KL(t ‖ m) + ½KL(p ‖ m), m = (p + t) / 2 "
    "(kornia js_div_loss_2d).",
    source="lossd (kornia js_div_loss_2d formula)",
    notes="Half precision is computed in float32 (kornia). Bounded by log 2 per map for distributions.",
    example=_heatmap_example,
    equivalents=(Equivalent("kornia.losses.js_div_loss_2d(pred, target, reduction='sum')", {"reduction": "sum"}, ""),),
)
def js_div_loss_2d(input: torch.Tensor, target: torch.Tensor, *, reduction: str) -> torch.Tensor:
    """``½KL(t ‖ m) + ½KL(p ‖ m)`` per map, ``m = (p + t) / 2``."""
    _check_heatmaps(input, target)
    p, t = widened(input), widened(target)
    m = 0.5 * (p + t)
    loss = (0.5 * _kl_per_map(t, m) + 0.5 * _kl_per_map(p, m)).to(torch.promote_types(input.dtype, target.dtype))
    return _reduce_last(loss, reduction)


@register_loss(
    "inverse_depth_smoothness_loss",
    aliases=("InverseDepthSmoothnessLoss",),
    refuses=("inputs not (N, C, H, W)", "an image whose (H, W) differ from the inverse depth's",
             "batch sizes that differ (unless one is 1)", "H or W below 2 (no differences to average)"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred", "idepth"),
              doc="inverse depth (N, 1, H, W)"),
        Input("target", "target", differentiable=True, aliases=("y_true", "image"),
              doc="the image (N, 3, H, W) whose edges lower the penalty"),
    ),
    params=(),
    description="Edge-aware smoothness of an inverse depth map: mean |∂x d|·exp(-mean_c |∂x I|) + the same in y.",
    source="lossd (Godard et al. 2017; kornia inverse_depth_smoothness_loss formula)",
    notes="Forward differences; each of the two means is over its own differences. The image is not normalised "
    "(expected in [0, 1]).",
    example=lambda dt: {"input": torch.tensor([[[[0.5, 0.6, 0.9], [0.4, 0.5, 0.7]]]], dtype=dt),
                        "target": torch.tensor([[[[0.1, 0.2, 0.8], [0.1, 0.3, 0.9]]]], dtype=dt).repeat(1, 3, 1, 1)},
    equivalents=(
        Equivalent("kornia.losses.InverseDepthSmoothnessLoss()", {}, "idepth (N, 1, H, W), image (N, 3, H, W)"),
    ),
)
def inverse_depth_smoothness_loss(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean|∂x d · exp(-mean_c|∂x I|)| + mean|∂y d · exp(-mean_c|∂y I|)|``."""
    require(input.dim() == 4, "inputs.input", f"must be (N, 1, H, W), got shape {list(input.shape)}")
    require(target.dim() == 4, "inputs.target", f"must be an image (N, C, H, W), got shape {list(target.shape)}")
    require(input.shape[2:] == target.shape[2:], "inputs.target",
            f"(H, W) {list(target.shape[2:])} must equal the inverse depth's {list(input.shape[2:])}")
    require(input.shape[0] == target.shape[0] or 1 in (input.shape[0], target.shape[0]), "inputs.target",
            f"batch size {target.shape[0]} must equal the inverse depth's {input.shape[0]} (or one of them be 1)")
    require(min(input.shape[2:]) >= 2, "inputs.input", f"H and W must be at least 2, got {list(input.shape[2:])}")
    terms = []
    for dim in (3, 2):
        n = input.shape[dim]
        d = input.narrow(dim, 0, n - 1) - input.narrow(dim, 1, n - 1)
        edge = (target.narrow(dim, 0, n - 1) - target.narrow(dim, 1, n - 1)).abs().mean(dim=1, keepdim=True)
        terms.append((d * torch.exp(-edge)).abs().mean())
    return terms[0] + terms[1]
