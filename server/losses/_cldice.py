"""clDice (Shit et al. 2021): a topology-preserving loss for tubular structures. Soft skeletons,
by iterated min/max pooling, of prediction and target; the loss is one minus the harmonic mean of
topology precision (prediction skeleton inside the target) and sensitivity (target skeleton
inside the prediction). 2-D (N, C, H, W) and 3-D (N, C, D, H, W), MONAI's conventions.

The pooling makes the loss piecewise smooth: its gradient is exact wherever no two pooled values
tie and no skeleton difference sits exactly at 0 (as in MONAI and the authors' code).

>>> import torch
>>> mask = torch.zeros(1, 1, 5, 5)
>>> mask[0, 0, 2, :] = 1.0  # a line: its own skeleton
>>> soft_cldice_loss(mask, mask, **{p.name: p.default for p in _CL_PARAMS}).item() < 1e-4  # smooth = 1e-4
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
    require_same_shape,
    require_unit_target,
    widened,
)

__all__ = ["soft_skeleton", "soft_cldice_loss", "soft_dice_cldice_loss"]


def _soft_erode(img: torch.Tensor) -> torch.Tensor:
    if img.dim() == 4:
        p1 = -F.max_pool2d(-img, (3, 1), (1, 1), (1, 0))
        p2 = -F.max_pool2d(-img, (1, 3), (1, 1), (0, 1))
        return torch.min(p1, p2)
    p1 = -F.max_pool3d(-img, (3, 1, 1), (1, 1, 1), (1, 0, 0))
    p2 = -F.max_pool3d(-img, (1, 3, 1), (1, 1, 1), (0, 1, 0))
    p3 = -F.max_pool3d(-img, (1, 1, 3), (1, 1, 1), (0, 0, 1))
    return torch.min(torch.min(p1, p2), p3)


def _soft_dilate(img: torch.Tensor) -> torch.Tensor:
    if img.dim() == 4:
        return F.max_pool2d(img, (3, 3), (1, 1), (1, 1))
    return F.max_pool3d(img, (3, 3, 3), (1, 1, 1), (1, 1, 1))


def soft_skeleton(img: torch.Tensor, iterations: int) -> torch.Tensor:
    """Soft skeleton of (N, C, H, W) or (N, C, D, H, W) values in [0, 1] (Shit et al. 2021, Alg. 1).

    >>> soft_skeleton(torch.ones(1, 1, 3, 3), 0).shape
    torch.Size([1, 1, 3, 3])
    """
    skel = F.relu(img - _soft_dilate(_soft_erode(img)))
    for _ in range(iterations):
        img = _soft_erode(img)
        delta = F.relu(img - _soft_dilate(_soft_erode(img)))
        skel = skel + F.relu(delta - skel * delta)
    return skel


_INPUTS = (
    Input("input", "prediction", differentiable=True, aliases=("y_pred",),
          doc="(N, C, H, W) or (N, C, D, H, W): probabilities, or logits with activation sigmoid/softmax"),
    Input("target", "target", kind="float|int", aliases=("y_true",),
          doc="shaped like input (masks or one-hot in [0, 1]), or class indices (N, *spatial) (MONAI's "
              "to_onehot_y, without its channel)"),
)
_ITER = Param("iter_", "int", 3, "Skeletonization iterations (MONAI's iter_): at least the half-thickness of the "
              "structures.", min=0, max=100)
_ACTIVATION = Param("activation", "string", "none", "Applied to input over dim 1 first: 'none' (probabilities), "
                    "'sigmoid' or 'softmax' (MONAI's sigmoid / softmax flags).", choices=("none", "sigmoid", "softmax"))
_SMOOTHS = (
    Param("smooth_nr", "float", 1.0, "Added to the numerators of precision and sensitivity (and of the Dice).",
          min=0.0),
    Param("smooth_dr", "float", 1.0, "Added to their denominators (and to the Dice's).", min=0.0),
    Param("smooth", "float", 1e-4, "Added to the denominator of the harmonic mean.", min=0.0, min_exclusive=True),
)
_INCLUDE_BG = Param("include_background", "bool", True, "false: leave class 0 out (needs C > 1).")
_CL_PARAMS = (_ITER, _ACTIVATION, *_SMOOTHS, _INCLUDE_BG,
              Param("reduction", "string", "mean", "'mean' or 'sum' over samples, or 'none' (N).",
                    choices=("none", "mean", "sum")))


def _prepare(input: torch.Tensor, target: torch.Tensor, activation: str,
             include_background: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, target) shaped (N, C', *spatial) in input's dtype, background dropped if asked. An integer
    target is a mask or one-hot when shaped like input (values 0 or 1), else class indices (N, *spatial)."""
    require(input.dim() in (4, 5) and input.shape[0] > 0 and input.shape[1] > 0, "inputs.input",
            f"must be (N, C, H, W) or (N, C, D, H, W), got shape {list(input.shape)}")
    c = input.shape[1]
    require(activation != "softmax" or c > 1, "params.activation", "'softmax' needs C > 1 (over one class it is 1)")
    require(include_background or c > 1, "params.include_background", "false needs C > 1")
    if target.is_floating_point() or target.shape == input.shape:
        require_same_shape(input, target, "a float target is a mask or one-hot shaped like input")
        require_unit_target(target, "a mask or one-hot")
        onehot = target.to(input.dtype)
    else:
        expected = [input.shape[0], *input.shape[2:]]
        require(list(target.shape) == expected, "inputs.target",
                f"shape {list(target.shape)} must be {expected} (class indices) or {list(input.shape)} (a mask or "
                "one-hot)")
        require(c > 1, "inputs.target", "class indices need input with C > 1 classes")
        require_class_indices(target, c)
        onehot = F.one_hot(target.long(), c).movedim(-1, 1).to(input.dtype)
    if activation == "sigmoid":
        probs = torch.sigmoid(input)
    elif activation == "softmax":
        probs = input.softmax(dim=1)
    else:
        require(bool(((input >= 0) & (input <= 1)).all()), "inputs.input",
                "probabilities must lie in [0, 1] (activation 'none'; NaN is refused)")
        probs = input
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    return probs, onehot


def _cldice(probs: torch.Tensor, onehot: torch.Tensor, iter_: int, smooth_nr: float, smooth_dr: float,
            smooth: float) -> torch.Tensor:
    """Per sample (N): ``1 - 2 Tprec Tsens / (Tprec + Tsens + smooth)``, over classes and space together."""
    skel_pred, skel_true = soft_skeleton(probs, iter_), soft_skeleton(onehot, iter_)
    dims = list(range(1, probs.dim()))
    tprec = ((skel_pred * onehot).sum(dims) + smooth_nr) / (skel_pred.sum(dims) + smooth_dr)
    tsens = ((skel_true * probs).sum(dims) + smooth_nr) / (skel_true.sum(dims) + smooth_dr)
    return 1.0 - 2.0 * (tprec * tsens) / (tprec + tsens + smooth)


def _example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[[[0.9, 0.8, 0.1], [0.2, 0.9, 0.2], [0.1, 0.7, 0.8]]]], dtype=dt),
        "target": torch.tensor([[[[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0]]]], dtype=dt),
    }


def _skeleton_graph(bound: Mapping[str, Any], params: Mapping[str, Any]) -> int:
    """The elements soft_skeleton keeps for the gradient: about 32 tensors the size of the skeletonized input (its
    pooled values, their int64 indices and the differences) each of its iter_ + 1 passes, the input N · C · pixels
    less the background channel when it is left out (98 KB of request at iter_ 100 asked 586 MB; an audit,
    2026-12-06)."""
    n, c, *spatial = (int(s) for s in bound["input"].shape)
    c -= 0 if params["include_background"] else 1
    return _PER_PASS * (int(params["iter_"]) + 1) * n * max(c, 0) * math.prod(spatial)


#: Input-sized tensors one pass of soft_skeleton keeps for the gradient (measured: 244 bytes a pixel in 2-D, 313 in
#: 3-D, float32): a 1 × 2 × 64³ volume at the default 3 iterations fits the work rule, 2^26.
_PER_PASS = 32
_WORK = Work("the soft skeleton's graph (32 · (iter_ + 1) · N · C · pixels)", "inputs.input", _skeleton_graph)

_REFUSES = (
    "an input not shaped (N, C, H, W) or (N, C, D, H, W)",
    "a target not shaped like input (values in [0, 1]) or (N, *spatial) (class indices in [0, C))",
    "probabilities outside [0, 1] with activation 'none'",
    "softmax or include_background false with one class",
)


#: What one call may hold under the default work limit (the soft skeleton's graph, counted as its work).
_SIZES = ("Under the default --max-loss-work (2^26), N · C · pixels may be at most 2^26 / (32 · (iter_ + 1)): "
          "at the default 3 iterations a 4 × 2 × 256² batch or a 1 × 2 × 64³ volume; a server sets a larger "
          "limit for more.")


@register_loss(
    "soft_cldice_loss",
    work=_WORK,
    aliases=("SoftclDiceLoss", "cldice_loss", "soft_cldice"),
    refuses=_REFUSES,
    inputs=_INPUTS,
    params=_CL_PARAMS,
    description="Soft clDice loss (Shit et al. 2021): 1 - harmonic mean of topology precision and sensitivity "
    "of soft skeletons, one per sample.",
    source="lossd (Shit et al. 2021; MONAI SoftclDiceLoss conventions)",
    notes="Tprec = (Σ skel(p)·t + nr) / (Σ skel(p) + dr), Tsens = (Σ skel(t)·p + nr) / (Σ skel(t) + dr), sums "
    "over classes and space of each sample. " + _SIZES,
    example=_example,
    equivalents=(
        Equivalent("monai.losses.SoftclDiceLoss()", {}, "input holds probabilities (N, C, H, W) or (N, C, D, H, W)"),
        Equivalent("monai.losses.SoftclDiceLoss(iter_=2, softmax=True, to_onehot_y=True, include_background=False)",
                   {"iter_": 2, "activation": "softmax", "include_background": False},
                   "target (N, *spatial) class indices (MONAI: (N, 1, *spatial)); 3-D here"),
    ),
)
def soft_cldice_loss(input: torch.Tensor, target: torch.Tensor, *, iter_: int, activation: str, smooth_nr: float,
                     smooth_dr: float, smooth: float, include_background: bool, reduction: str) -> torch.Tensor:
    """Per sample clDice loss (see notes); shape (N) for 'none'. Half precision is computed in float32 and the loss
    cast back (its sums over every pixel overflow float16)."""
    probs, onehot = _prepare(widened(input), target, activation, include_background)
    loss = _cldice(probs, onehot, iter_, smooth_nr, smooth_dr, smooth)
    loss = loss if reduction == "none" else (loss.sum() if reduction == "sum" else loss.mean())
    return narrowed(loss, input.dtype)


@register_loss(
    "soft_dice_cldice_loss",
    work=_WORK,
    aliases=("SoftDiceclDiceLoss", "dice_cldice_loss", "soft_dice_cldice"),
    refuses=_REFUSES,
    inputs=_INPUTS,
    params=(
        _ITER,
        Param("alpha", "float", 0.5, "Weight of clDice: (1 - alpha)·Dice + alpha·clDice.", min=0.0, max=1.0),
        _ACTIVATION, *_SMOOTHS, _INCLUDE_BG,
        Param("reduction", "string", "mean", "'mean': the Dice over samples and classes, clDice over samples; 'sum' "
              "likewise summed (MONAI).", choices=("mean", "sum")),
    ),
    description="(1 - alpha)·soft Dice + alpha·soft clDice (Shit et al. 2021), MONAI's SoftDiceclDiceLoss.",
    source="lossd (Shit et al. 2021; MONAI SoftDiceclDiceLoss conventions)",
    notes="The Dice term is MONAI's DiceLoss per sample and class: 1 - (2 Σ p·t + nr) / (Σ p + Σ t + dr). " + _SIZES,
    example=_example,
    equivalents=(
        Equivalent("monai.losses.SoftDiceclDiceLoss()", {}, "input holds probabilities"),
        Equivalent("monai.losses.SoftDiceclDiceLoss(iter_=5, alpha=0.3, sigmoid=True, reduction='sum')",
                   {"iter_": 5, "alpha": 0.3, "activation": "sigmoid", "reduction": "sum"}, ""),
    ),
)
def soft_dice_cldice_loss(input: torch.Tensor, target: torch.Tensor, *, iter_: int, alpha: float, activation: str,
                          smooth_nr: float, smooth_dr: float, smooth: float, include_background: bool,
                          reduction: str) -> torch.Tensor:
    """``(1 - alpha)·dice + alpha·cldice``, each reduced by ``reduction`` first. Half precision is computed in float32
    and the loss cast back: Σ p + Σ t over 2^16 pixels overflowed float16 (a Dice term of 1, gradient 0)."""
    probs, onehot = _prepare(widened(input), target, activation, include_background)
    dims = list(range(2, probs.dim()))
    dice = 1 - (2 * (probs * onehot).sum(dims) + smooth_nr) / (probs.sum(dims) + onehot.sum(dims) + smooth_dr)
    cl = _cldice(probs, onehot, iter_, smooth_nr, smooth_dr, smooth)
    if reduction == "sum":
        loss = (1 - alpha) * dice.sum() + alpha * cl.sum()
    else:
        loss = (1 - alpha) * dice.mean() + alpha * cl.mean()
    return narrowed(loss, input.dtype)
