"""Robust regression losses: Barron's family members kornia ships (Charbonnier, Welsch, Cauchy,
Geman-McClure) with a scale ``c``, and the Wing loss for landmarks.

Each is elementwise on ``x = input - target``; with ``scale = 1`` they are kornia's
functions (``kornia.losses.charbonnier_loss`` …) exactly, half precision computed in float32 as
kornia does. Where ``x²`` passes the dtype's range (``|x|`` past about 1.3e19 in float32) kornia's
formulas overflow (inf, or NaN for Geman-McClure); lossd computes the same function there in a form
that does not (each loss's notes say which).

>>> import torch
>>> round(cauchy_loss(torch.tensor([2.0]), torch.tensor([0.0]), scale=1.0, reduction="mean").item(), 6)  # log(1 + 2)
1.098612
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._registry import (
    REDUCTION,
    Equivalent,
    Input,
    Param,
    narrowed,
    reduce,
    register_loss,
    require,
    require_same_shape,
    widened,
)

__all__ = ["charbonnier_loss", "welsch_loss", "cauchy_loss", "geman_mcclure_loss", "wing_loss"]

_INPUTS = (
    Input("input", "prediction", differentiable=True, aliases=("y_pred", "img1"), doc="predictions, any shape"),
    Input("target", "target", differentiable=True, aliases=("y_true", "img2"), doc="targets, same shape"),
)
_SCALE = Param("scale", "float", 1.0, "Scale c: the loss of (input - target) / c (Barron 2019); kornia's is 1.",
               min=0.0, min_exclusive=True)


def _example(dt: torch.dtype) -> dict[str, object]:
    return {"input": torch.tensor([[0.5, -1.0, 3.0], [0.2, 2.5, -0.7]], dtype=dt),
            "target": torch.tensor([[1.0, -1.5, 0.0], [0.0, 0.5, 0.3]], dtype=dt)}


def _register(name: str, aliases: tuple[str, ...], description: str, formula: str, kornia: str,
              rho: Callable[[torch.Tensor], torch.Tensor], notes: str = "") -> Callable[..., torch.Tensor]:
    def loss(input: torch.Tensor, target: torch.Tensor, *, scale: float, reduction: str) -> torch.Tensor:
        require_same_shape(input, target, "the loss is elementwise")
        dtype = torch.promote_types(input.dtype, target.dtype)
        x = widened(input) - widened(target)  # half precision in float32, as kornia: x² overflowed float16 at 256
        out = reduce(rho(x if scale == 1 else x / scale), reduction)
        return narrowed(out, dtype)

    loss.__name__ = name
    loss.__doc__ = f"Per element {formula}, ``x = (input - target) / scale``."
    register_loss(
        name, aliases=aliases, inputs=_INPUTS, params=(_SCALE, REDUCTION), description=description,
        refuses=("a target shaped unlike the input",),
        source=f"lossd (Barron 2019; {kornia} formula)", example=_example,
        notes=f"Half precision is computed in float32 and the loss cast back (kornia). {notes}".strip(),
        equivalents=(Equivalent(f"{kornia}(img1, img2, reduction='mean')", {}, ""),),
    )(loss)
    return loss


def _charbonnier(x: torch.Tensor) -> torch.Tensor:
    """kornia's: ``x² / (sqrt(x² + 1) + 1)`` below 1 (``sqrt(x² + 1) - 1`` cancels there: 0 for 1e-4 in float32),
    ``sqrt(x² + 1) - 1`` from 1; ``|x| - 1`` where x² overflows (kornia's is inf there)."""
    squared = x * x
    small = squared < 1
    small_squared = torch.where(small, squared, 0.0)  # the unused branch's gradient stays finite
    out = torch.where(small, small_squared / ((small_squared + 1.0).sqrt() + 1.0), (squared + 1.0).sqrt() - 1.0)
    return torch.where(squared.isinf(), x.abs() - 1, out)


def _cauchy(x: torch.Tensor) -> torch.Tensor:
    """``log1p(x²/2)``; ``2·log|x| - log 2`` where x²/2 overflows (kornia's is inf there)."""
    half_squared = 0.5 * x * x
    big = half_squared.isinf()
    magnitude = torch.where(big, x.abs(), 1.0)  # log's gradient stays finite where x = 0 and the branch is unused
    return torch.where(big, 2 * magnitude.log() - math.log(2.0), torch.log1p(half_squared))


def _geman_mcclure(x: torch.Tensor) -> torch.Tensor:
    """``2x² / (x² + 4)``; ``2 - 8 / (x² + 4)`` where 2x² overflows (kornia's is inf / inf = NaN there)."""
    big = (2 * x * x).isinf()
    fits = torch.where(big, 0.0, x)  # the unused branch's inf / inf leaves its gradient finite
    return torch.where(big, 2 - 8 / (x * x + 4), 2 * fits * fits / (fits * fits + 4))


charbonnier_loss = _register(
    "charbonnier_loss", ("CharbonnierLoss", "charbonnier"),
    "Charbonnier (L1-L2, pseudo-Huber): sqrt(x² + 1) - 1.", "``sqrt(x² + 1) - 1``",
    "kornia.losses.charbonnier_loss", _charbonnier,
    "Below |x| = 1 computed as x² / (sqrt(x² + 1) + 1), as kornia (no cancellation); where x² overflows "
    "(|x| past about 1.8e19 in float32, 1.3e154 in float64) |x| - 1, where kornia's loss is inf and its gradient 0.")
welsch_loss = _register(
    "welsch_loss", ("WelschLoss", "welsch", "leclerc_loss"),
    "Welsch (Leclerc): 1 - exp(-x²/2); bounded, ignores outliers.", "``1 - exp(-x²/2)``",
    "kornia.losses.welsch_loss", lambda x: -torch.expm1(-0.5 * x * x))
cauchy_loss = _register(
    "cauchy_loss", ("CauchyLoss", "cauchy", "lorentzian_loss"),
    "Cauchy (Lorentzian): log(1 + x²/2).", "``log(1 + x²/2)``",
    "kornia.losses.cauchy_loss", _cauchy,
    "Where x²/2 overflows (|x| past about 2.6e19 in float32, 1.9e154 in float64) 2·log|x| - log 2, where kornia's "
    "loss is inf.")
geman_mcclure_loss = _register(
    "geman_mcclure_loss", ("GemanMcclureLoss", "geman_mcclure"),
    "Geman-McClure: 2x² / (x² + 4); bounded.", "``2x² / (x² + 4)``",
    "kornia.losses.geman_mcclure_loss", _geman_mcclure,
    "Where 2x² overflows (|x| past about 1.3e19 in float32, 9.5e153 in float64) 2 - 8/(x² + 4) (the loss 2, its "
    "gradient 0), where kornia's is inf/inf = NaN.")


@register_loss(
    "wing_loss",
    aliases=("WingLoss", "wing"),
    refuses=("a target shaped unlike the input",),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="predicted coordinates, any shape"),
        Input("target", "target", differentiable=True, aliases=("y_true",), doc="true coordinates, same shape"),
    ),
    params=(
        Param(
            "width", "float", 5.0, "w: where the loss turns from logarithmic to linear.", min=0.0, min_exclusive=True
        ),
        Param("curvature", "float", 0.5, "ε: curvature of the logarithmic part.", min=0.0, min_exclusive=True),
        REDUCTION,
    ),
    description="Wing loss for landmark regression (Feng et al. 2018): w·log(1 + |x|/ε) near 0, |x| - C beyond w.",
    source="lossd (Feng et al. 2018; smp/pytorch-toolbelt wing_loss conventions)",
    notes="Half precision is computed in float32 and the loss cast back: w·log(1 + |x|/ε) passes float16's range "
    "for a wide w where the mean does not.",
    example=_example,
    equivalents=(
        Equivalent("pytorch_toolbelt.losses.WingLoss(width=5, curvature=0.5, reduction='mean')", {}, ""),
        Equivalent(
            "segmentation_models_pytorch.losses._functional.wing_loss(output, target, width=2, curvature=1)",
            {"width": 2.0, "curvature": 1.0},
            "",
        ),
    ),
)
def wing_loss(
    input: torch.Tensor, target: torch.Tensor, *, width: float, curvature: float, reduction: str
) -> torch.Tensor:
    """``|x| < w``: ``w·log(1 + |x|/ε)``; else ``|x| - C`` with ``C = w - w·log(1 + w/ε)`` (continuous at w). Half
    precision is computed in float32 and the loss cast back: ``w·log(1 + |x|/ε)`` passed float16's 65504 for a wide
    ``w`` (30000) where the mean is finite, and so did ``target - input``."""
    require_same_shape(input, target, "the loss is elementwise")
    require(width > 0 and curvature > 0, "params.width", "width and curvature must be positive")
    dtype = torch.promote_types(input.dtype, target.dtype)
    d = (widened(target) - widened(input)).abs()
    c = width - width * math.log1p(width / curvature)
    return narrowed(reduce(torch.where(d < width, width * torch.log1p(d / curvature), d - c), reduction), dtype)
