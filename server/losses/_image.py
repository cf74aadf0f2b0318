"""Image losses: SSIM, MS-SSIM and the distance-transform Hausdorff loss.

SSIM uses a Gaussian window (separable, per channel); ``padding='same'`` reflects the
borders (kornia), ``'valid'`` keeps only full windows (MONAI, pytorch-msssim).
The Hausdorff loss needs Euclidean distance transforms of binary masks; they are
computed here in torch, exactly (squared distances are separable: one brute-force
pass per spatial dimension), and the input size is checked first so the work is bounded.

>>> import torch
>>> x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
>>> float(ssim_loss(x, x, window_size=3, sigma=1.5, max_val=1.0, k1=0.01, k2=0.03, eps=1e-12,
...                 padding="same", form="half", reduction="mean"))
0.0
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._dtypes import WIRE_NAMES
from ._overlap import _probabilities, guarded_power  # the masks and activations of the overlap losses
from ._registry import (
    HALF_DTYPES,
    Equivalent,
    Input,
    LossError,
    Param,
    narrowed,
    register_loss,
    register_split_name,
    require,
    require_class_indices,
    widened,
)

__all__ = [
    "ssim_loss",
    "ms_ssim_loss",
    "ms_ssim_l1_loss",
    "hausdorff_dt_loss",
    "hausdorff_er_loss",
    "distance_field",
    "MAX_DISTANCE_WORK",
]

_IMAGES = (
    Input("input", "prediction", differentiable=True, aliases=("y_pred", "img1"),
          doc="images (N, C, H, W); ssim_loss also volumes (N, C, D, H, W)"),
    Input("target", "target", differentiable=True, aliases=("y_true", "img2"), doc="images, same shape"),
)


def _gaussian(window_size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """The normalized 1-D Gaussian window of ``window_size`` taps, in ``like``'s dtype (:func:`_gaussian_taps`)."""
    return _gaussian_taps(torch.arange(window_size, dtype=like.dtype, device=like.device) - (window_size - 1) / 2,
                          sigma)


def _gaussian_taps(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The normalized Gaussian window at offsets ``x``. Where ``2·sigma²`` is below the dtype's smallest normal
    number the window is the centre tap alone: the formula's own value there (every other tap's exponent is past
    -10^37), which it computed as 0/0 = NaN at the centre once ``2·sigma²`` rounded to 0 (an audit, 2026-12-06).

    >>> _gaussian(3, 1e-30, torch.zeros(1)).tolist(), _gaussian(3, 1e-19, torch.zeros(1)).tolist()
    ([0.0, 1.0, 0.0], [0.0, 1.0, 0.0])
    """
    if 2 * sigma * sigma < torch.finfo(x.dtype).tiny:
        return (x == 0).to(x.dtype)
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor, padding: str) -> torch.Tensor:
    """Separable Gaussian filter per channel over the 2 or 3 spatial dims; 'same' reflects the borders,
    'valid' keeps full windows only."""
    n, c, *spatial = x.shape
    k = g.shape[0]
    y = x.reshape(n * c, 1, *spatial)
    if padding == "same":
        y = F.pad(y, (k // 2, (k - 1) // 2) * len(spatial), mode="reflect")
    conv = F.conv2d if len(spatial) == 2 else F.conv3d
    for axis in range(len(spatial)):
        shape = [1] * (2 + len(spatial))
        shape[2 + axis] = k
        y = conv(y, g.view(shape))
    return y.reshape(n, c, *y.shape[2:])


def _ssim_maps(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, c1: float, c2: float, eps: float, padding: str
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(SSIM map, contrast-structure map)."""
    mu_x, mu_y = _blur(x, g, padding), _blur(y, g, padding)
    sxx = _blur(x * x, g, padding) - mu_x * mu_x
    syy = _blur(y * y, g, padding) - mu_y * mu_y
    sxy = _blur(x * y, g, padding) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2) + eps)
    return ssim, cs


def _check_images(input: torch.Tensor, target: torch.Tensor, window_size: int, padding: str, scales: int = 1,
                  volumes: bool = False) -> None:
    shapes = "(N, C, H, W) or (N, C, D, H, W)" if volumes else "(N, C, H, W)"
    require(input.dim() == 4 or (volumes and input.dim() == 5), "inputs.input",
            f"must be images {shapes}, got shape {list(input.shape)}")
    require(
        target.shape == input.shape,
        "inputs.target",
        f"shape {list(target.shape)} must equal input's {list(input.shape)}",
    )
    require(window_size % 2 == 1, "params.window_size", f"must be odd, got {window_size}")
    # valid windows at every scale: the image is halved (floored) scales - 1 times and must still hold a window
    smallest = window_size * 2 ** (scales - 1) if padding == "valid" or scales > 1 else window_size // 2 + 1
    require(min(input.shape[2:]) >= smallest, "inputs.input",
            f"each spatial size must be at least {smallest} for window_size {window_size}"
            + (f" and {scales} scales" if scales > 1 else "") + f", got {list(input.shape[2:])}")


#: The most of k1·max_val and k2·max_val: their squares, SSIM's c1 and c2, stay finite in float32 (1e300 overflowed
#: Python's float: "(34, 'Numerical result out of range')" under the field inputs; an audit, 2026-12-06).
MAX_K_RANGE = 1e18


def _stabilizers(k1: float, k2: float, max_val: float) -> tuple[float, float]:
    """SSIM's ``c1 = (k1·L)²`` and ``c2 = (k2·L)²``; refused naming the params when they would not be finite in
    float32."""
    for name, k in (("k1", k1), ("k2", k2)):
        require(k * max_val <= MAX_K_RANGE, f"params.{name}",
                f"{name}·max_val is {k * max_val:.3g}; must be at most {MAX_K_RANGE:g} ({name}·max_val squared "
                "must be finite in float32)")
    return (k1 * max_val) ** 2, (k2 * max_val) ** 2


#: The widest SSIM window: each pixel's filtering grows with it (a window of 511 on a 256² image took 6 s of CPU from
#: 262 KB; an audit, 2026-12-06). 65 costs about 3 times the default 11, and holds a Gaussian of σ up to 16 by
#: kornia's 2·int(2σ) + 1 (its MS_SSIMLoss's widest default is 33).
MAX_WINDOW = 65

_WINDOW = (
    Param("window_size", "int", 11, "Side of the Gaussian window (odd).", min=1, max=MAX_WINDOW),
    Param("sigma", "float", 1.5, "Standard deviation of the Gaussian window.", min=0.0, min_exclusive=True),
    Param("max_val", "float", 1.0, "Dynamic range L of the images (kornia max_val, MONAI data_range).",
          min=0.0, min_exclusive=True),
    Param("k1", "float", 0.01, "c1 = (k1·L)².", min=0.0),
    Param("k2", "float", 0.03, "c2 = (k2·L)².", min=0.0),
)


@register_loss(
    "ssim_loss",
    aliases=(),
    refuses=("inputs not (N, C, H, W) or (N, C, D, H, W)", "a target shaped unlike the input",
             "an even window_size", "images smaller than the window (window_size // 2 + 1 a side with padding "
             "'same', window_size with 'valid')"),
    inputs=_IMAGES,
    params=(
        *_WINDOW,
        Param("eps", "float", 1e-12, "Added to SSIM's denominator (kornia).", min=0.0),
        Param(
            "padding",
            "string",
            "same",
            "'same': reflected borders, one value per pixel (kornia); 'valid': full windows only (MONAI).",
            choices=("same", "valid"),
        ),
        Param(
            "form",
            "string",
            "half",
            "'half': clamp((1 - SSIM) / 2, 0, 1) (kornia); 'one_minus': 1 - SSIM (MONAI).",
            choices=("half", "one_minus"),
        ),
        Param(
            "reduction",
            "string",
            "mean",
            "'mean' or 'sum' over the map, or 'none' (the map).",
            choices=("none", "mean", "sum"),
        ),
    ),
    description="Structural dissimilarity: 1 - SSIM (Wang et al. 2004) with a Gaussian window, per pixel (2-D or 3-D).",
    source="lossd (Wang et al. 2004; kornia ssim_loss and MONAI SSIMLoss conventions)",
    example=lambda dt: {
        "input": torch.linspace(0, 1, 50, dtype=torch.float64).reshape(1, 2, 5, 5).to(dt),
        "target": torch.linspace(0, 1, 50, dtype=torch.float64).flip(0).reshape(1, 2, 5, 5).to(dt),
        "params": {"window_size": 3},
    },
    equivalents=(
        Equivalent("kornia.losses.ssim_loss(img1, img2, window_size=5)", {"window_size": 5}, ""),
        Equivalent(
            "monai.losses.SSIMLoss(spatial_dims=2, win_size=5)",
            {"window_size": 5, "padding": "valid", "form": "one_minus", "eps": 0.0},
            "",
        ),
        Equivalent(
            "kornia.losses.ssim3d_loss(img1, img2, window_size=3)", {"window_size": 3}, "volumes (N, C, D, H, W)"
        ),
        Equivalent(
            "monai.losses.SSIMLoss(spatial_dims=3, win_size=3)",
            {"window_size": 3, "padding": "valid", "form": "one_minus", "eps": 0.0},
            "volumes (N, C, D, H, W)",
        ),
    ),
)
def ssim_loss(input: torch.Tensor, target: torch.Tensor, *, window_size: int, sigma: float, max_val: float, k1: float,
              k2: float, eps: float, padding: str, form: str, reduction: str) -> torch.Tensor:
    """``SSIM = (2μxμy + c1)(2σxy + c2) / ((μx² + μy² + c1)(σx² + σy² + c2) + eps)`` per pixel. Half-precision
    inputs are computed in float32 and the loss cast back (their variances cancel, as in ms_ssim_loss)."""
    _check_images(input, target, window_size, padding, volumes=True)
    half = input.dtype in HALF_DTYPES
    x, y = widened(input), widened(target)
    ssim, _ = _ssim_maps(x, y, _gaussian(window_size, sigma, x), *_stabilizers(k1, k2, max_val), eps, padding)
    loss = torch.clamp((1 - ssim) / 2, 0, 1) if form == "half" else 1 - ssim
    loss = loss.mean() if reduction == "mean" else (loss.sum() if reduction == "sum" else loss)
    return loss.to(input.dtype) if half else loss


_MS_WEIGHTS = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
#: Most scales of ms_ssim_loss (weights) and ms_ssim_l1_loss (sigmas); the published ones use 5. And the largest
#: σ of ms_ssim_l1_loss: its windows are 2·int(2σ)+1 wide (257 at most; kornia's default ends at 8, 33 wide),
#: each pixel's work grows with it: σ = 3·10^5 held a worker 7.6 s for a 1×2×8×8 request, and larger ones
#: asked the allocator for gigabytes (an audit, 2026-12-06).
MAX_SCALES, MAX_SIGMA = 16, 64.0
#: Most window taps a pixel of ms_ssim_l1_loss's scales together (scales × window width): five of the widest
#: SSIM window. Each scale filters five maps with the window: 16 scales of 257 took 5 s from 393 KB (an audit,
#: 2026-12-06); kornia's default, 5 scales of 33, is 165.
MAX_SCALE_TAPS = 5 * MAX_WINDOW


@register_loss(
    "ms_ssim_loss",
    aliases=("multiscale_ssim_loss",),
    refuses=("inputs not (N, C, H, W)", "a target shaped unlike the input", "an even window_size",
             "images smaller than window_size·2^(scales - 1) a side", f"more than {MAX_SCALES} weights (scales)"),
    inputs=_IMAGES,
    params=(
        *_WINDOW,
        Param(
            "weights",
            "float_list",
            _MS_WEIGHTS,
            "One exponent per scale (Wang et al. 2003); the image is halved (2×2 average) between scales.",
            min=0.0,
        ),
        Param(
            "reduction",
            "string",
            "mean",
            "'mean' or 'sum' over images and channels, or 'none' (N, C).",
            choices=("none", "mean", "sum"),
        ),
    ),
    description="1 - MS-SSIM (Wang et al. 2003): contrast-structure at each scale, luminance at the coarsest.",
    source="lossd (Wang et al. 2003; valid windows, per image and channel as pytorch-msssim)",
    notes="kornia's MS_SSIMLoss is a different loss (MS-SSIM blended with L1, Zhao et al. 2017): ms_ssim_l1_loss. "
    "Needs images of at "
    "least window_size·2^(scales-1) pixels a side (each halving floors).",
    example=lambda dt: {
        "input": torch.linspace(0, 1, 72, dtype=torch.float64).reshape(1, 2, 6, 6).to(dt),
        "target": torch.linspace(0, 1, 72, dtype=torch.float64).pow(2).reshape(1, 2, 6, 6).to(dt),
        "params": {"window_size": 3, "weights": [0.4, 0.6]},
    },
    equivalents=(
        Equivalent(
            "monai.losses.SSIMLoss with monai.metrics.MultiScaleSSIMMetric(spatial_dims=2, kernel_size=3, "
            "weights=(0.4, 0.6)): 1 - metric",
            {"window_size": 3, "weights": [0.4, 0.6]},
            "one channel: MONAI averages over the channels before the product",
        ),
    ),
)
def ms_ssim_loss(input: torch.Tensor, target: torch.Tensor, *, window_size: int, sigma: float, max_val: float,
                 k1: float, k2: float, weights: list[float], reduction: str) -> torch.Tensor:
    """Per image and channel ``Π_{j<M} relu(mean cs_j)^w_j · relu(mean ssim_M)^w_M``; loss ``1 -`` that.
    Half-precision inputs are computed in float32 and the loss cast back."""
    require(len(weights) <= MAX_SCALES, "params.weights", f"has {len(weights)} scales; at most {MAX_SCALES}")
    _check_images(input, target, window_size, "valid", scales=len(weights))
    x, y = widened(input), widened(target)  # variances of small windows cancel in 8-11 bits
    g = _gaussian(window_size, sigma, x)
    c1, c2 = _stabilizers(k1, k2, max_val)
    factors = []
    for j, w in enumerate(weights):
        ssim, cs = _ssim_maps(x, y, g, c1, c2, 0.0, "valid")
        last = j == len(weights) - 1
        value = torch.relu((ssim if last else cs).mean(dim=(-2, -1)))
        factors.append(guarded_power(value, w))  # relu may give 0: a finite gradient there
        if not last:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    loss = (1 - torch.stack(factors).prod(0)).to(input.dtype)
    return loss.mean() if reduction == "mean" else (loss.sum() if reduction == "sum" else loss)


#: Most elementary steps (elements × window length, summed over passes) one request's distance
#: transforms may take; past it the request is refused before any work.
MAX_DISTANCE_WORK = 2**27
_CHUNK = 2**22


def _cost(offsets: torch.Tensor, start: int, block: int) -> torch.Tensor:
    """Squared distances from output indices ``start`` to ``start + block`` (rows) to every source index."""
    return (offsets[start:start + block].view(-1, 1) - offsets.view(1, -1)) ** 2


def _squared_distance_to(targets: torch.Tensor) -> torch.Tensor:
    """For (B, *spatial) booleans: squared Euclidean distance of each pixel to the nearest True pixel
    (inf where there is none). Exact: one brute-force min per spatial dimension."""
    f = torch.where(targets, 0.0, math.inf).to(torch.float64)
    for d in range(1, f.dim()):
        length = f.shape[d]
        offsets = torch.arange(length, dtype=torch.float64, device=f.device)
        moved = f.movedim(d, -1)
        flat = moved.reshape(-1, length)
        # pieces of at most _CHUNK elements (rows × output indices × source indices): a side of 6,000 pixels
        # built a 6,000² cost matrix and as large a piece, 567 MB from a 30 KB request (an audit, 2026-12-06)
        block = max(1, min(length, _CHUNK // length))  # output indices per piece
        rows = max(1, _CHUNK // (length * block))
        whole = _cost(offsets, 0, length) if block == length else None  # the whole matrix fits: built once
        out = torch.cat([torch.cat([(flat[i:i + rows].unsqueeze(1) + (_cost(offsets, j, block) if whole is None
                                                                      else whole)).amin(-1)
                                    for j in range(0, length, block)], dim=1)
                         for i in range(0, flat.shape[0], rows)])
        f = out.reshape(moved.shape).movedim(-1, d)
    return f


def distance_field(mask: torch.Tensor) -> torch.Tensor:
    """For (B, *spatial) booleans: each pixel's distance to the nearest pixel of the other kind;
    all zeros for a mask that is all True or all False (MONAI's HausdorffDTLoss)."""
    inside = _squared_distance_to(~mask)
    outside = _squared_distance_to(mask)
    field = torch.where(mask, inside, outside).sqrt()
    flat = mask.reshape(mask.shape[0], -1)
    mixed = (flat.any(1) & ~flat.all(1)).view(-1, *([1] * (mask.dim() - 1)))
    return torch.where(mixed, field, torch.zeros_like(field))


@register_loss(
    "hausdorff_dt_loss",
    batch_coupled=True,  # log=true takes the log of the batch mean
    aliases=("hausdorff_dt",),
    refuses=("an input not (N, C, H, W) or (N, C, H, W, D)", "mode 'binary' with more than one channel",
             "targets not shaped as mode says (a mask shaped like input; multiclass: class indices (N, *) or "
             "one-hot), outside [0, 1] or outside [0, C)", "probabilities outside [0, 1] with from_logits false",
             "include_background false with one channel",
             f"distance transforms of more than {MAX_DISTANCE_WORK} steps (N·C·pixels·Σ sides)",
             "an alpha for which a pixel's two distances^alpha add up beyond the dtype (float32 for half "
             "precision)"),
    inputs=(
        Input(
            "input",
            "prediction",
            differentiable=True,
            aliases=("y_pred",),
            doc="probabilities (or logits with from_logits) (N, C, H, W) or (N, C, H, W, D)",
        ),
        Input(
            "target",
            "target",
            kind="float|int",
            aliases=("y_true",),
            doc="0/1 masks shaped like input, or class indices (N, *spatial) with mode 'multiclass'",
        ),
    ),
    params=(
        Param("alpha", "float", 2.0, "Exponent of the distances.", min=0.0),
        Param(
            "mode",
            "string",
            "multilabel",
            "'multilabel' (channels independent, sigmoid), 'multiclass' (softmax, "
            "class-index or one-hot targets) or 'binary' (C = 1).",
            choices=("binary", "multiclass", "multilabel"),
        ),
        Param("from_logits", "bool", False, "Apply sigmoid/softmax first (MONAI sigmoid/softmax; default: none)."),
        Param("include_background", "bool", True, "false: leave channel 0 out (MONAI's default is false)."),
        Param(
            "aggregation",
            "string",
            "per_sample",
            "'per_sample': mean over space per sample and channel (MONAI "
            "batch=False); 'pooled': over batch and space per channel (batch=True).",
            choices=("per_sample", "pooled"),
        ),
        Param(
            "reduction",
            "string",
            "mean",
            "'mean', 'sum', or 'none': (N, C) per_sample, (C) pooled.",
            choices=("none", "mean", "sum"),
        ),
        Param("log", "bool", False, "log(1 + loss) after the reduction (MONAI's LogHausdorffDTLoss)."),
    ),
    description="Hausdorff distance loss (Karimi & Salcudean 2019): (p - t)² weighted by distance transforms "
    "of the thresholded prediction and of the target.",
    source="lossd (Karimi & Salcudean 2019; MONAI HausdorffDTLoss conventions; distance transforms in torch)",
    notes=f"Distance transforms are exact Euclidean, of (p > 0.5) and (t > 0.5), without gradient. The work is "
    f"bounded: N·C·pixels·(H + W [+ D]) at most {MAX_DISTANCE_WORK} (INVALID_ARGUMENT past it).",
    example=lambda dt: {
        "input": torch.tensor([[[[0.9, 0.8, 0.1], [0.7, 0.3, 0.2], [0.1, 0.2, 0.6]]]], dtype=dt),
        "target": torch.tensor([[[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]], dtype=dt),
    },
    equivalents=(
        Equivalent("monai.losses.HausdorffDTLoss(include_background=True)", {}, ""),
        Equivalent(
            "monai.losses.LogHausdorffDTLoss(sigmoid=True, include_background=True)",
            {"from_logits": True, "log": True},
            "",
        ),
        Equivalent(
            "monai.losses.HausdorffDTLoss(softmax=True, to_onehot_y=True, batch=True)",
            {"mode": "multiclass", "from_logits": True, "aggregation": "pooled", "include_background": False},
            "MONAI's include_background default is False",
        ),
    ),
)
def hausdorff_dt_loss(input: torch.Tensor, target: torch.Tensor, *, alpha: float, mode: str, from_logits: bool,
                      include_background: bool, aggregation: str, reduction: str, log: bool) -> torch.Tensor:
    """``mean((p - t)² · (dt(p > 0.5)^alpha + dt(t > 0.5)^alpha))`` per sample and channel (or channel). Half
    precision keeps the distances and the per-pixel products in float32, as MONAI does (dt^alpha overflowed
    float16), and casts the reduced loss back."""
    require(
        input.dim() in (4, 5), "inputs.input", f"must be (N, C, H, W) or (N, C, H, W, D), got shape {list(input.shape)}"
    )
    require(
        mode != "binary" or input.shape[1] == 1,
        "inputs.input",
        f"mode 'binary' needs one channel, got {input.shape[1]}",
    )
    spatial = list(input.shape[2:])
    work = input.numel() * sum(spatial)
    if work > MAX_DISTANCE_WORK:
        raise LossError("inputs.input", f"distance transforms of shape {list(input.shape)} take {work} steps "
                        f"(N·C·pixels·Σ sides); at most {MAX_DISTANCE_WORK} are allowed")
    probs, onehot = _probabilities(input, target, mode, from_logits, None)
    if not include_background:
        require(probs.shape[1] > 1, "params.include_background", "needs more than one channel")
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    n, c = probs.shape[:2]
    p, t = widened(probs), widened(onehot)
    with torch.no_grad():
        pred_dt = distance_field((probs.detach() > 0.5).reshape(n * c, *spatial)).reshape(n, c, -1)
        target_dt = distance_field((onehot > 0.5).reshape(n * c, *spatial)).reshape(n, c, -1)
        distance = (pred_dt.pow(alpha) + target_dt.pow(alpha)).to(p.dtype)
        if not bool(distance.isfinite().all()):  # (p - t)² · inf is NaN where p = t
            farthest = float(torch.maximum(pred_dt.max(), target_dt.max()))
            raise LossError("params.alpha", f"is too large for these masks in {WIRE_NAMES[p.dtype]}: the sum of "
                            f"two distances to the power {alpha:g} (the largest distance is {farthest:.4g}) is beyond "
                            f"{torch.finfo(p.dtype).max:.4g}, and the loss would be NaN; use a smaller alpha or "
                            "send float64")
    per_pixel = (p - t) ** 2 * distance
    loss = per_pixel.mean(dim=2) if aggregation == "per_sample" else per_pixel.mean(dim=(0, 2))
    loss = loss.mean() if reduction == "mean" else (loss.sum() if reduction == "sum" else loss)
    loss = torch.log1p(loss) if log else loss
    dtype = torch.promote_types(probs.dtype, onehot.dtype)
    return narrowed(loss, dtype)


def _erosion_kernel(dims: int, like: torch.Tensor) -> torch.Tensor:
    """The pixel and its face neighbours, weights summing to 1 (kornia's cross kernel)."""
    cross = torch.tensor([[0.0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=like.dtype, device=like.device)
    if dims == 2:
        return (cross * 0.2).view(1, 1, 3, 3)
    centre = torch.zeros_like(cross)
    centre[1, 1] = 1
    return (torch.stack([centre, cross, centre]) / 7).view(1, 1, 3, 3, 3)


@register_loss(
    "hausdorff_er_loss",
    aliases=("HausdorffERLoss", "hausdorff_er", "HausdorffERLoss3D"),
    refuses=("an input not (N, C, H, W) or (N, C, D, H, W)",
             "targets not class indices (N, *spatial) or (N, 1, *spatial) in [0, C)"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",),
              doc="probabilities per class (N, C, H, W) or (N, C, D, H, W)"),
        Input("target", "target", kind="int", aliases=("y_true",),
              doc="class indices (N, 1, *spatial) or (N, *spatial)"),
    ),
    params=(
        Param("alpha", "float", 2.0, "Exponent of the weight (i + 1)^alpha of erosion i.", min=0.0),
        Param("k", "int", 10, "Number of erosions.", min=1, max=100),
        Param("reduction", "string", "mean", "'mean', 'sum', or 'none' (N, C, *spatial).",
              choices=("none", "mean", "sum")),
    ),
    description="Hausdorff distance loss by morphological erosion (Karimi & Salcudean 2019): weighted sum of "
                "k erosions of (p - t)², each rescaled to [0, 1].",
    source="lossd (Karimi & Salcudean 2019; kornia HausdorffERLoss formula)",
    example=lambda dt: {"input": torch.tensor([[[[0.9, 0.8, 0.1], [0.7, 0.3, 0.2], [0.1, 0.2, 0.6]],
                                                [[0.1, 0.2, 0.9], [0.3, 0.7, 0.8], [0.9, 0.8, 0.4]]]], dtype=dt),
                        "target": torch.tensor([[[0, 0, 1], [0, 1, 1], [1, 1, 1]]]), "params": {"k": 3}},
    equivalents=(
        Equivalent("kornia.losses.HausdorffERLoss(alpha=2.0, k=3)", {"k": 3}, "target (N, 1, H, W) class indices"),
        Equivalent("kornia.losses.HausdorffERLoss3D(alpha=2.0, k=2)", {"k": 2}, "volumes; target (N, 1, D, H, W)"),
    ),
)
def hausdorff_er_loss(
    input: torch.Tensor, target: torch.Tensor, *, alpha: float, k: int, reduction: str
) -> torch.Tensor:
    """Per class c: ``b = (p_c - [t = c])²``; k times: ``e = relu'(conv(b, cross) - 0.5)`` rescaled to [0, 1]
    per image, accumulated with weight ``(i + 1)^alpha``, ``b = e``."""
    require(
        input.dim() in (4, 5), "inputs.input", f"must be (N, C, H, W) or (N, C, D, H, W), got shape {list(input.shape)}"
    )
    if target.dim() == input.dim():
        require(
            target.shape[1] == 1, "inputs.target", f"class indices have one channel, got shape {list(target.shape)}"
        )
        target = target.squeeze(1)
    expected = [input.shape[0], *input.shape[2:]]
    require(
        list(target.shape) == expected,
        "inputs.target",
        f"shape {list(target.shape)} must be {expected} (or with a channel of 1)",
    )
    require_class_indices(target, input.shape[1])
    biggest = torch.finfo(input.dtype).max if input.is_floating_point() else math.inf
    require(alpha * math.log(k) < math.log(biggest), "params.alpha",
            f"the largest weight k^alpha = {k}^{alpha:g} must be finite in {str(input.dtype).removeprefix('torch.')} "
            "(beyond it the loss is NaN)")
    spatial = tuple(range(2, input.dim()))
    onehot = F.one_hot(target, input.shape[1]).movedim(-1, 1).to(input.dtype)
    n, c = input.shape[:2]
    bound = ((input - onehot) ** 2).reshape(n * c, 1, *input.shape[2:])
    kernel = _erosion_kernel(input.dim() - 2, input)
    conv = F.conv2d if input.dim() == 4 else F.conv3d
    eroded = torch.zeros_like(bound)
    for i in range(k):
        dilation = conv(bound, kernel, padding=1)
        erosion = torch.where(dilation < 0.5, torch.zeros_like(dilation), dilation - 0.5)
        top, bottom = erosion.amax(dim=spatial, keepdim=True), erosion.amin(dim=spatial, keepdim=True)
        spread = top - bottom
        erosion = torch.where(
            spread != 0, (erosion - bottom) / torch.where(spread != 0, spread, torch.ones_like(spread)), erosion
        )
        eroded = eroded + erosion * (i + 1) ** alpha
        bound = erosion
    loss = eroded.reshape(input.shape)
    return loss.mean() if reduction == "mean" else (loss.sum() if reduction == "sum" else loss)


@register_loss(
    "ms_ssim_l1_loss",
    aliases=("ms_ssim_l1", "MSSSIML1Loss"),
    refuses=("inputs not (N, C, H, W)", "a target shaped unlike the input",
             f"more than {MAX_SCALE_TAPS} window taps a pixel (scales × the last σ's window width)"),
    inputs=_IMAGES,
    params=(
        Param(
            "sigmas",
            "float_list",
            [0.5, 1.0, 2.0, 4.0, 8.0],
            f"Gaussian scales (one window each, no down-sampling; at most {MAX_SCALES}, each at most {MAX_SIGMA:g}); "
            "windows are 2·int(2·σ) + 1 wide for the last σ (as kornia), zero-padded; scales × that width at most "
            f"{MAX_SCALE_TAPS}.",
            min=0.0,
            min_exclusive=True,
            max=MAX_SIGMA,
        ),
        Param(
            "max_val", "float", 1.0, "Dynamic range L of the images (kornia's data_range).", min=0.0, min_exclusive=True
        ),
        Param("k1", "float", 0.01, "c1 = (k1·L)².", min=0.0),
        Param("k2", "float", 0.03, "c2 = (k2·L)².", min=0.0),
        Param(
            "alpha",
            "float",
            0.025,
            "Weight of the MS-SSIM term; 1 - alpha weighs the Gaussian-weighted L1 term.",
            min=0.0,
            max=1.0,
        ),
        Param("compensation", "float", 200.0, "Factor on the whole loss.", min=0.0),
        Param(
            "reduction",
            "string",
            "mean",
            "'mean' or 'sum' over images and pixels, or 'none' (N, H, W).",
            choices=("none", "mean", "sum"),
        ),
    ),
    description="MS-SSIM + L1 mix (Zhao et al. 2017): alpha·(1 - MS-SSIM) + (1 - alpha)·Gaussian-weighted L1 / L, "
    "per pixel.",
    source="lossd (Zhao et al. 2017; kornia MS_SSIMLoss formula)",
    example=lambda dt: {
        "input": torch.linspace(0, 1, 50, dtype=torch.float64).reshape(1, 2, 5, 5).to(dt),
        "target": torch.linspace(0, 1, 50, dtype=torch.float64).pow(2).reshape(1, 2, 5, 5).to(dt),
        "params": {"sigmas": [0.5, 1.0]},
    },
    equivalents=(Equivalent("kornia.losses.MS_SSIMLoss(sigmas=(0.5, 1.0, 2.0))", {"sigmas": [0.5, 1.0, 2.0]}, ""),),
)
def ms_ssim_l1_loss(input: torch.Tensor, target: torch.Tensor, *, sigmas: list[float], max_val: float, k1: float,
                    k2: float, alpha: float, compensation: float, reduction: str) -> torch.Tensor:
    """Per pixel: ``l`` at the largest σ times ``Π_σ cs_σ``, averaged over channels: MS-SSIM;
    ``|x - y|`` blurred by the largest window, averaged over channels: L1;
    loss = ``compensation · (alpha · (1 - MS-SSIM) + (1 - alpha) · L1 / L)``."""
    require(len(sigmas) <= MAX_SCALES, "params.sigmas", f"has {len(sigmas)} scales; at most {MAX_SCALES}")
    pad = int(2 * sigmas[-1])
    size = 2 * pad + 1
    require(len(sigmas) * size <= MAX_SCALE_TAPS, "params.sigmas",
            f"has {len(sigmas)} scales of {size}-wide windows (the last σ's, 2·int(2σ) + 1): {len(sigmas) * size} "
            f"taps a pixel; at most {MAX_SCALE_TAPS} (scales × width)")
    _check_images(input, target, 1, "same")
    x, y = widened(input), widened(target)
    coords = torch.arange(size, dtype=x.dtype, device=x.device) - size // 2
    windows = [_gaussian_taps(coords, sigma) for sigma in sigmas]
    n, c, h, w = x.shape
    c1, c2 = _stabilizers(k1, k2, max_val)

    def blur(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        z = F.conv2d(z.reshape(n * c, 1, h, w), g.view(1, 1, size, 1), padding=(pad, 0))
        return F.conv2d(z, g.view(1, 1, 1, size), padding=(0, pad)).reshape(n, c, h, w)

    contrast = torch.ones_like(x)
    luminance = torch.ones_like(x)
    for j, g in enumerate(windows):
        mx, my = blur(x, g), blur(y, g)
        sxx, syy, sxy = blur(x * x, g) - mx * mx, blur(y * y, g) - my * my, blur(x * y, g) - mx * my
        contrast = contrast * (2 * sxy + c2) / (sxx + syy + c2)
        if j == len(windows) - 1:
            luminance = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    ms_ssim = 1 - (luminance * contrast).mean(dim=1)
    l1 = blur((x - y).abs(), windows[-1]).mean(dim=1)
    loss = (compensation * (alpha * ms_ssim + (1 - alpha) * l1 / max_val)).to(input.dtype)
    return loss.mean() if reduction == "mean" else (loss.sum() if reduction == "sum" else loss)


for _name in ("hausdorff_loss", "HausdorffLoss"):
    register_split_name(_name, "hausdorff_dt_loss (distance transforms: MONAI HausdorffDTLoss) or hausdorff_er_loss "
                        "(morphological erosion: kornia HausdorffERLoss), both Karimi & Salcudean 2019")
# kornia's SSIMLoss is (1 - SSIM) / 2 with reflected borders, MONAI's 1 - SSIM over full windows: one loss, two
# conventions far apart (a factor 2), so the class name is no alias. ssim and ms_ssim name the similarity itself
# (kornia.metrics.ssim, pytorch_msssim.ssim), not a loss: no alias either.
# MONAI's HausdorffDTLoss leaves channel 0 out by default (include_background=False); lossd's default keeps it.
register_split_name("HausdorffDTLoss", "hausdorff_dt_loss with include_background false (MONAI's default; with one "
                    "channel MONAI ignores it: send the default, true)")
register_split_name("SSIMLoss", "ssim_loss with its defaults (kornia.losses.SSIMLoss: (1 - SSIM) / 2, reflected "
                    "borders) or with padding 'valid', form 'one_minus', eps 0 (monai.losses.SSIMLoss: 1 - SSIM)")
for _name in ("MS_SSIMLoss", "MSSSIMLoss"):
    register_split_name(_name, "ms_ssim_loss (1 - MS-SSIM, Wang et al. 2003: pytorch-msssim, MONAI's metric) or "
                        "ms_ssim_l1_loss (MS-SSIM blended with L1, Zhao et al. 2017: kornia.losses.MS_SSIMLoss)")
