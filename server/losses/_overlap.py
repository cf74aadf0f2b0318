"""Overlap losses for segmentation: Dice, Jaccard, Tversky, focal Tversky, generalized Dice, MCC.

The libraries agree on the formulas and differ in conventions; each convention is a
parameter here, never a guess (``docs/losses.md`` maps library calls to requests):

- what is summed before dividing (``aggregation``): the whole batch per class
  (``pooled``, smp, MONAI ``batch=True``), each sample per class (``per_sample``,
  MONAI ``batch=False``, kornia ``average='macro'``) or each sample over all classes
  (``micro``, kornia ``average='micro'``);
- smoothing: ``smooth`` in numerator and denominator, or ``smooth_nr`` / ``smooth_dr``
  separately (MONAI; kornia's ``eps`` is ``smooth_dr``); ``eps`` bounds the denominator;
- classes with no target pixels: scored (default) or counted as 0 (``empty_classes='zero'``,
  smp and pytorch-toolbelt);
- soft labels: intersection ``Σ p·t`` (default) or ``Σ min(p, t)`` (``soft_label``: smp ≥ 0.5,
  MONAI ``soft_label=True``); ``squared_pred``: ``Σ p²`` and ``Σ t²`` in the denominator (MONAI).

>>> import torch
>>> from lossd.server.losses import REGISTRY
>>> REGISTRY.get("dice_loss").fn(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), **{
...     p.name: p.default for p in REGISTRY.get("dice_loss").params} | {"from_logits": False}).item()
0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._registry import (
    Equivalent,
    Input,
    Param,
    narrowed,
    reduce,
    register_loss,
    register_split_name,
    require,
    require_class_indices,
    require_same_shape,
    require_unit_target,
    widened,
)

__all__ = ["OverlapStats", "overlap_stats", "guarded_power"]

_OVERLAP_INPUTS = (
    Input("input", "prediction", differentiable=True, aliases=("y_pred",),
          doc="logits or probabilities: binary (N, *) or (N, 1, *); multiclass/multilabel (N, C, *)"),
    Input("target", "target", kind="float|int", aliases=("y_true",),
          doc="binary/multilabel: mask in [0, 1] shaped like input; multiclass: class indices (N, *) "
              "or one-hot/class probabilities shaped like input"),
    Input("mask", "element weight", required=False,
          doc="(N or 1, 1, *), values in [0, 1]: multiplies probabilities and targets after the activation "
              "(MONAI's MaskedDiceLoss)"),
)

_MASK_TARGET = Param(
    "mask_target",
    "string",
    "one_hot",
    "How inputs.mask meets the target: 'one_hot' multiplies the one-hot target (masked pixels count nowhere); "
    "'class_indices' multiplies class indices before the one-hot, so masked pixels count as class 0 with "
    "probability 0 (MONAI MaskedDiceLoss with to_onehot_y=True; multiclass, class-index target, mask of 0/1).",
    choices=("one_hot", "class_indices"),
)
_MODE = Param("mode", "string", "binary", "'binary', 'multiclass' (softmax over dim 1) or 'multilabel' (sigmoid).",
              choices=("binary", "multiclass", "multilabel"))
_FROM_LOGITS = Param(
    "from_logits", "bool", True, "Apply sigmoid/softmax to input first (false: input holds probabilities)."
)
_IGNORE = Param("ignore_index", "int", None, "Target value whose pixels count nowhere (null: none). "
                "Binary/multilabel: per element; multiclass: the pixel, every class.", nullable=True)
_INCLUDE_BG = Param("include_background", "bool", True, "false: leave class 0 out (MONAI's include_background).")
_CLASSES = Param(
    "classes", "int_list", None, "Only these class indices count (smp's classes); null: all.", nullable=True
)
_CLASS_WEIGHTS = Param("class_weights", "float_list", None,
                       "One weight per class of input (C, background included). aggregation 'pooled' and "
                       "'per_sample': 'mean' is Σ w·loss / Σ w over classes, 'sum' and 'none' multiply; 'micro': "
                       "each class's terms enter the sample's sums once, weighted (I = Σ w·p·t, P = Σ w·p, "
                       "T = Σ w·t; kornia's weighted micro Dice). null: equal weights.", nullable=True)
_SOFT_LABEL = Param("soft_label", "bool", False, "Intersection Σ min(p, t) (right for soft labels; smp ≥ 0.5, MONAI "
                    "soft_label) instead of Σ p·t. Equal on 0/1 targets.")
_SQUARED = Param("squared_pred", "bool", False, "Denominator from Σ p² and Σ t² (MONAI DiceLoss's squared_pred). "
                 "The Tversky losses take it only with alpha = beta: Σ p² - Σ p·t (their FP) can be negative.")
_AGGREGATION = Param("aggregation", "string", "pooled",
                     "'pooled': sums over batch and space, one score per class; 'per_sample': one per sample and class "
                     "(MONAI batch=False, kornia macro); 'micro': one per sample over all classes (kornia micro).",
                     choices=("pooled", "per_sample", "micro"))
_EMPTY = Param(
    "empty_classes",
    "string",
    "score",
    "A class (or sample, with per_sample/micro) with no target pixels: 'score' it like any other, count "
    "its loss as 0 ('zero', smp and pytorch-toolbelt; it stays in the mean), or 'skip' it in the class mean "
    "(kornia 0.9 tversky_loss; a sample with no class present scores 0, loss 1; 'sum'/'none' count it as 0).",
    choices=("score", "zero", "skip"),
)
_LOG_LOSS = Param("log_loss", "bool", False, "Loss -log(max(score, eps)) instead of 1 - score (smp's log_loss).")
_OVERLAP_REDUCTION = Param(
    "reduction",
    "string",
    "mean",
    "'mean' over classes (weighted) and samples, 'sum', or 'none': per class (pooled), per sample "
    "and class (N, C) (per_sample) or per sample (micro).",
    choices=("none", "mean", "sum"),
)


#: What every overlap loss refuses (its (b) rules, as docs/losses.md lists them).
_TARGET_REFUSES = (
    "an empty batch",
    "binary/multilabel: a target shaped unlike the input, or values outside [0, 1] other than ignore_index",
    "multiclass: an input without a class dimension (N, C, *); targets neither class indices (N, *) in [0, C) "
    "(or ignore_index) nor one-hot / class probabilities in [0, 1] shaped like input; ignore_index with a float "
    "target",
    "probabilities outside [0, 1] with from_logits false",
)
_MASK_REFUSES = ("a mask not shaped (N or 1, 1, *spatial), or with values outside [0, 1] (NaN included)",)
_CLASS_REFUSES = (
    "class_weights not one per class of input, negative or all 0",
    "classes outside [0, C), repeated, or leaving no class (include_background false counted); selecting "
    "classes in mode 'binary'",
)
_OVERLAP_REFUSES = _TARGET_REFUSES + _MASK_REFUSES + _CLASS_REFUSES


def _smoothing(smooth_doc: str, smooth_default: float = 0.0, eps_default: float = 1e-7) -> tuple[Param, ...]:
    return (
        Param("smooth", "float", smooth_default, smooth_doc, min=0.0),
        Param(
            "smooth_nr",
            "float",
            None,
            "Added to the numerator instead of smooth (MONAI's smooth_nr); null: smooth.",
            min=0.0,
            nullable=True,
        ),
        Param(
            "smooth_dr",
            "float",
            None,
            "Added to the denominator instead of smooth (MONAI's smooth_dr; kornia's eps); null: smooth.",
            min=0.0,
            nullable=True,
        ),
        Param("eps", "float", eps_default, "Lower bound of the denominator.", min=0.0),
    )


def _overlap_params(*extra: Param, smooth_doc: str = "Added to numerator and denominator.") -> tuple[Param, ...]:
    return (_MODE, _FROM_LOGITS, *_smoothing(smooth_doc), *extra, _IGNORE, _INCLUDE_BG, _CLASSES, _CLASS_WEIGHTS,
            _SOFT_LABEL, _SQUARED, _AGGREGATION, _EMPTY, _LOG_LOSS, _OVERLAP_REDUCTION, _MASK_TARGET)


@dataclass(frozen=True)
class OverlapStats:
    """Per unit (class, sample × class, or sample): ``tp`` (intersection), ``p`` and ``t`` (the sums
    of prediction and target, squared with ``squared_pred``), and the class weights (or None); in float32
    for half inputs, whose loss is cast back to ``dtype`` (sums over 65504 pixels overflowed float16)."""

    tp: torch.Tensor
    p: torch.Tensor
    t: torch.Tensor
    weights: torch.Tensor | None
    dtype: torch.dtype

    def narrowed(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` in the input's dtype where that is a half type (computed in float32)."""
        return narrowed(loss, self.dtype)


def _probabilities(input: torch.Tensor, target: torch.Tensor, mode: str, from_logits: bool, ignore_index: int | None,
                   mask: torch.Tensor | None = None, mask_target: str = "one_hot") -> tuple[torch.Tensor, torch.Tensor]:
    """(probs, target) as (N, C, S) with ignored elements zeroed in both, both times ``mask`` (``mask_target``
    'class_indices': the mask multiplies the class indices before the one-hot, MONAI's MaskedDiceLoss)."""
    require(input.dim() >= 1 and input.shape[0] > 0, "inputs.input", "needs a non-empty batch dimension")
    by_index = mask_target == "class_indices"
    if by_index:
        require(mask is not None, "params.mask_target", "'class_indices' needs inputs.mask")
        require(mode == "multiclass" and not target.is_floating_point(), "params.mask_target",
                "'class_indices' needs mode 'multiclass' and a class-index target (N, *)")
    n = input.shape[0]
    keep: torch.Tensor | None = None
    if mode == "multiclass":
        require(input.dim() >= 2, "inputs.input", f"multiclass needs (N, C, *), got shape {list(input.shape)}")
        n_classes = input.shape[1]
        if target.is_floating_point() or (target.shape == input.shape and not by_index):
            require_same_shape(input, target, "a float multiclass target is one-hot or class probabilities (N, C, *)")
            require(ignore_index is None, "params.ignore_index", "needs class-index targets in multiclass mode")
            require_unit_target(target, "one-hot")
            onehot = target if target.is_floating_point() else target.to(input.dtype)
        else:
            expected = [n, *input.shape[2:]]
            require(list(target.shape) == expected, "inputs.target",
                    f"shape {list(target.shape)} must be {expected} (class indices) or {list(input.shape)} (one-hot)")
            require_class_indices(target, n_classes, ignore_index)
            if ignore_index is not None:
                keep = (target != ignore_index).reshape(n, 1, -1)
                target = torch.where(target == ignore_index, torch.zeros_like(target), target)
            if by_index:
                assert mask is not None
                _check_mask(mask, input)
                require(bool(((mask == 0) | (mask == 1)).all()), "inputs.mask",
                        "values must be 0 or 1 with mask_target 'class_indices' (they multiply class indices)")
                target = torch.where(mask.squeeze(1) == 0, torch.zeros_like(target), target)
            onehot = F.one_hot(target.long(), n_classes).movedim(-1, 1).to(input.dtype)
        probs = input.softmax(dim=1) if from_logits else input
        if by_index:
            assert mask is not None
            probs = probs * mask
        elif mask is not None:
            probs, onehot = _masked(probs, onehot, mask, input)
    else:
        require_same_shape(input, target, f"{mode} targets are a mask shaped like input")
        if ignore_index is not None:
            keep = target != ignore_index
            target = torch.where(keep, target, torch.zeros_like(target))
        onehot = target.to(input.dtype)
        also = f" or equal ignore_index ({ignore_index})" if ignore_index is not None else ""
        require(
            bool(((onehot >= 0) & (onehot <= 1)).all()),
            "inputs.target",
            f"mask values must lie in [0, 1]{also} (NaN is refused)",
        )
        probs = torch.sigmoid(input) if from_logits else input
        if mask is not None:
            probs, onehot = _masked(probs, onehot, mask, input)
        if mode == "binary" or input.dim() == 1:
            probs, onehot = probs.reshape(n, 1, -1), onehot.reshape(n, 1, -1)
            keep = keep.reshape(n, 1, -1) if keep is not None else None
    if not from_logits:
        require(
            bool(((input >= 0) & (input <= 1)).all()),
            "inputs.input",
            "probabilities must lie in [0, 1] (from_logits=false)",
        )
    probs = probs.reshape(n, probs.shape[1], -1)
    onehot = onehot.reshape(n, onehot.shape[1], -1)
    if keep is not None:
        keep = keep.reshape(n, keep.shape[1], -1).to(input.dtype)
        probs, onehot = probs * keep, onehot * keep
    return probs, onehot


def _check_mask(mask: torch.Tensor, input: torch.Tensor) -> None:
    expected = f"[{input.shape[0]} or 1, 1, {', '.join(map(str, input.shape[2:]))}]"
    require(input.dim() >= 2 and mask.dim() == input.dim() and mask.shape[0] in (1, input.shape[0])
            and mask.shape[1] == 1 and mask.shape[2:] == input.shape[2:], "inputs.mask",
            f"shape {list(mask.shape)} must be {expected} (one value per pixel, every class)")
    # A weight past 1 makes Σ p·t exceed Σ p (a score above 1), a negative one turns the sums' signs.
    require(bool(((mask >= 0) & (mask <= 1)).all()), "inputs.mask", "values must lie in [0, 1] (NaN is refused)")


def _masked(probs: torch.Tensor, onehot: torch.Tensor, mask: torch.Tensor, input: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    _check_mask(mask, input)
    return probs * mask, onehot * mask


def _kept_classes(n_classes: int, mode: str, include_background: bool, classes: Sequence[int] | None,
                  class_weights: Sequence[float] | None) -> list[int] | None:
    """The class indices that count (None: all), after checking the class parameters."""
    if class_weights is not None:
        require(len(class_weights) == n_classes, "params.class_weights",
                f"needs one weight per class of input: {n_classes}, got {len(class_weights)}")
        require(all(w >= 0 for w in class_weights) and sum(class_weights) > 0, "params.class_weights",
                "weights must be >= 0 and not all 0")
    if classes is None and include_background:
        return None
    require(mode != "binary", "params.classes" if classes is not None else "params.include_background",
            "selecting classes needs mode 'multiclass' or 'multilabel'")
    kept = list(range(n_classes)) if classes is None else list(classes)
    if classes is not None:
        require(all(0 <= c < n_classes for c in kept), "params.classes", f"class indices must lie in [0, {n_classes})")
        require(len(set(kept)) == len(kept), "params.classes", "must not repeat a class")
    if not include_background:
        kept = [c for c in kept if c != 0]
    if classes is None:  # include_background false is what left none: name the field sent
        require(bool(kept), "params.include_background", "false leaves no class to score (input has one class)")
    require(bool(kept), "params.classes", "leaves no class to score")
    return kept


def overlap_stats(input: torch.Tensor, target: torch.Tensor, *, mode: str, from_logits: bool, ignore_index: int | None,
                  include_background: bool, classes: Sequence[int] | None, class_weights: Sequence[float] | None,
                  soft_label: bool, squared_pred: bool, aggregation: str, mask: torch.Tensor | None = None,
                  mask_target: str = "one_hot") -> OverlapStats:
    """Intersection and sums per unit of ``aggregation``: (C,) pooled, (N, C) per_sample, (N,) micro; half
    inputs (and targets) are counted in float32."""
    dtype, input, target = input.dtype, widened(input), widened(target)
    probs, onehot = _probabilities(input, target, mode, from_logits, ignore_index, mask, mask_target)
    kept = _kept_classes(probs.shape[1], mode, include_background, classes, class_weights)
    weights = None
    if class_weights is not None:
        weights = torch.tensor(class_weights, dtype=input.dtype, device=input.device)
    if kept is not None:
        index = torch.tensor(kept, device=input.device)
        probs, onehot = probs.index_select(1, index), onehot.index_select(1, index)
        weights = weights.index_select(0, index) if weights is not None else None
    wprobs, wonehot = probs, onehot
    if aggregation == "micro" and weights is not None:
        # kornia's weighted micro Dice: each class's terms weighted once, I = Σ (w·p)·t, P = Σ w·p, T = Σ w·t
        wprobs, wonehot = probs * weights.view(1, -1, 1), onehot * weights.view(1, -1, 1)
    dims = {"pooled": (0, 2), "per_sample": (2,), "micro": (1, 2)}[aggregation]
    if squared_pred:
        tp, p, t = (wprobs * onehot).sum(dims), (wprobs * probs).sum(dims), (wonehot * onehot).sum(dims)
    elif soft_label:
        p, t = wprobs.sum(dims), wonehot.sum(dims)
        tp = (p + t - (wprobs - wonehot).abs().sum(dims)) / 2
    else:
        tp, p, t = (wprobs * onehot).sum(dims), wprobs.sum(dims), wonehot.sum(dims)
    return OverlapStats(tp, p, t, None if aggregation == "micro" else weights, dtype)


def guarded_power(q: torch.Tensor, gamma: float) -> torch.Tensor:
    """``q ** gamma`` whose gradient at ``q == 0`` is 0, not NaN, for ``0 < gamma < 1``.

    >>> guarded_power(torch.tensor([0.0, 0.25]), 0.5).tolist()
    [0.0, 0.5]
    """
    if gamma == 1:
        return q
    nonzero = q != 0
    safe = torch.where(nonzero, q, torch.ones_like(q))
    return torch.where(nonzero, safe.pow(gamma), torch.zeros_like(q))


def _finish(score: torch.Tensor, stats: OverlapStats, *, eps: float, log_loss: bool, empty_classes: str,
            reduction: str, gamma: float = 1.0, gamma_on: str = "each") -> torch.Tensor:
    """Per-unit loss from the score, then weights, empty units and the reduction; in the input's dtype."""
    return stats.narrowed(_reduced(score, stats, eps=eps, log_loss=log_loss, empty_classes=empty_classes,
                                   reduction=reduction, gamma=gamma, gamma_on=gamma_on))


def _reduced(score: torch.Tensor, stats: OverlapStats, *, eps: float, log_loss: bool, empty_classes: str,
             reduction: str, gamma: float, gamma_on: str) -> torch.Tensor:
    loss = -torch.log(score.clamp_min(eps)) if log_loss else 1 - score
    if gamma_on == "each":
        loss = guarded_power(loss, gamma)
    present = (stats.t > 0).to(loss.dtype)
    if empty_classes in ("zero", "skip"):
        loss = loss * present
    w = stats.weights
    if empty_classes == "skip" and reduction == "mean":
        wp = present if w is None else present * w
        count = wp.sum(-1)
        per = (loss * (1 if w is None else w)).sum(-1) / count.clamp_min(torch.finfo(loss.dtype).tiny)
        out = torch.where(count > 0, per, torch.ones_like(per)).mean()
        return guarded_power(out, gamma) if gamma_on == "mean" else out
    if reduction == "none":
        return loss if w is None else loss * w
    if reduction == "sum":
        out = loss.sum() if w is None else (loss * w).sum()
    else:
        out = loss.mean() if w is None else ((loss * w).sum(-1) / w.sum()).mean()
    return guarded_power(out, gamma) if gamma_on == "mean" else out


def _smooths(smooth: float, smooth_nr: float | None, smooth_dr: float | None) -> tuple[float, float]:
    return (smooth if smooth_nr is None else smooth_nr), (smooth if smooth_dr is None else smooth_dr)


def _overlap_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[[1.5, -0.5], [0.2, -2.0]], [[-1.0, 2.0], [0.7, 0.1]]], dtype=dt),
        "target": torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]], dtype=dt),
    }


_SMP_DICE_NOTE = ("smp's soft_dice_score is (I + s) / (P/2 + T/2 + s): smooth = 2s, eps = 2·eps; "
                  "empty_classes='zero' because smp zeroes classes absent from the target")

_DICE_EQUIVALENTS = (
    Equivalent(
        "segmentation_models_pytorch.losses.DiceLoss(mode='multiclass')",
        {"mode": "multiclass", "soft_label": True, "empty_classes": "zero", "eps": 2e-7},
        _SMP_DICE_NOTE,
    ),
    Equivalent(
        "segmentation_models_pytorch.losses.DiceLoss(mode='binary', smooth=1.0, log_loss=True)",
        {"mode": "binary", "soft_label": True, "empty_classes": "zero", "smooth": 2.0, "eps": 2e-7, "log_loss": True},
        _SMP_DICE_NOTE,
    ),
    Equivalent(
        "segmentation_models_pytorch.losses.DiceLoss(mode='multilabel', classes=[1, 2], ignore_index=-1, "
        "class_weights=[1.0, 2.0, 3.0])",
        {
            "mode": "multilabel",
            "soft_label": True,
            "empty_classes": "zero",
            "eps": 2e-7,
            "classes": [1, 2],
            "ignore_index": -1,
            "class_weights": [1.0, 2.0, 3.0],
        },
        _SMP_DICE_NOTE,
    ),
    Equivalent(
        "pytorch_toolbelt.losses.DiceLoss(mode='multiclass')",
        {"mode": "multiclass", "empty_classes": "zero"},
        "hard labels; toolbelt intersects with Σ p·t",
    ),
    Equivalent(
        "kornia.losses.dice_loss(pred, target)",
        {
            "mode": "multiclass",
            "aggregation": "micro",
            "smooth_nr": 0.0,
            "smooth_dr": 1e-8,
            "eps": 0.0,
            "ignore_index": -100,
        },
        "pred (N, C, H, W) logits, target (N, H, W) class indices",
    ),
    Equivalent(
        "kornia.losses.dice_loss(pred, target, weight=w)",
        {
            "mode": "multiclass",
            "aggregation": "micro",
            "smooth_nr": 0.0,
            "smooth_dr": 1e-8,
            "eps": 0.0,
            "ignore_index": -100,
            "class_weights": [1.0, 2.0, 0.5],
        },
        "class_weights = w",
    ),
    Equivalent(
        "kornia.losses.dice_loss(pred, target, average='macro', weight=w)",
        {
            "mode": "multiclass",
            "aggregation": "per_sample",
            "smooth_nr": 0.0,
            "smooth_dr": 1e-8,
            "eps": 0.0,
            "ignore_index": -100,
            "class_weights": [1.0, 2.0, 0.5],
            "empty_classes": "skip",
        },
        "class_weights = w; kornia 0.9 leaves a class absent from a sample's target out of that sample's mean",
    ),
    Equivalent(
        "monai.losses.DiceLoss(softmax=True, to_onehot_y=True)",
        {"mode": "multiclass", "aggregation": "per_sample", "smooth_nr": 1e-5, "smooth_dr": 1e-5, "eps": 0.0},
        "target (N, *) class indices (MONAI: (N, 1, *))",
    ),
    Equivalent(
        "monai.losses.DiceLoss(sigmoid=True, batch=True, squared_pred=True, include_background=False)",
        {
            "mode": "multilabel",
            "aggregation": "pooled",
            "smooth_nr": 1e-5,
            "smooth_dr": 1e-5,
            "eps": 0.0,
            "squared_pred": True,
            "include_background": False,
        },
        "",
    ),
    Equivalent(
        "monai.losses.DiceLoss(sigmoid=True, soft_label=True, reduction='none')",
        {
            "mode": "multilabel",
            "aggregation": "per_sample",
            "smooth_nr": 1e-5,
            "smooth_dr": 1e-5,
            "eps": 0.0,
            "soft_label": True,
            "reduction": "none",
        },
        "MONAI's shape is (N, C, 1, ...); lossd's (N, C)",
    ),
    Equivalent(
        "monai.losses.MaskedDiceLoss(softmax=True)",
        {"mode": "multiclass", "aggregation": "per_sample", "smooth_nr": 1e-5, "smooth_dr": 1e-5, "eps": 0.0},
        "one-hot target; send MONAI's mask as input mask (N, 1, *)",
    ),
    Equivalent(
        "monai.losses.MaskedDiceLoss(softmax=True, to_onehot_y=True)",
        {"mode": "multiclass", "aggregation": "per_sample", "smooth_nr": 1e-5, "smooth_dr": 1e-5, "eps": 0.0,
         "mask_target": "class_indices"},
        "target (N, *) class indices, mask (N, 1, *) of 0/1: MONAI masks the class indices, so masked pixels "
        "count as class 0",
    ),
    Equivalent(
        "monai.losses.DiceLoss(softmax=True, to_onehot_y=True, weight=w)",
        {
            "mode": "multiclass",
            "aggregation": "per_sample",
            "smooth_nr": 1e-5,
            "smooth_dr": 1e-5,
            "eps": 0.0,
            "class_weights": [0.25, 0.5, 1.0],
            "reduction": "sum",
        },
        "MONAI's mean of w·loss over N·C: class_weights = w / (N·C) with reduction 'sum' "
        "(here N=2, C=3, w=[1.5, 3, 6])",
    ),
)


@register_loss(
    "dice_loss",
    batch_coupled=True,  # pooled over the batch by default (aggregation); per_sample/micro would shard
    aliases=("DiceLoss", "dice"),
    refuses=_OVERLAP_REFUSES,
    inputs=_OVERLAP_INPUTS,
    params=_overlap_params(),
    description="1 - Dice coefficient (2|X∩Y| / (|X|+|Y|)), averaged over classes.",
    source="lossd (Milletari et al. 2016; conventions of smp, kornia, MONAI as parameters)",
    example=_overlap_example,
    equivalents=_DICE_EQUIVALENTS,
)
def dice_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    mode: str,
    from_logits: bool,
    smooth: float,
    smooth_nr: float | None,
    smooth_dr: float | None,
    eps: float,
    ignore_index: int | None,
    include_background: bool,
    classes: list[int] | None,
    class_weights: list[float] | None,
    soft_label: bool,
    squared_pred: bool,
    aggregation: str,
    empty_classes: str,
    log_loss: bool,
    reduction: str,
    mask_target: str,
) -> torch.Tensor:
    """Per unit ``1 - (2*I + smooth_nr) / max(P + T + smooth_dr, eps)``; units and their mean per ``aggregation``."""
    s = overlap_stats(input, target, mode=mode, from_logits=from_logits, ignore_index=ignore_index,
                      include_background=include_background, classes=classes, class_weights=class_weights,
                      soft_label=soft_label, squared_pred=squared_pred, aggregation=aggregation, mask=mask,
                      mask_target=mask_target)
    nr, dr = _smooths(smooth, smooth_nr, smooth_dr)
    score = (2 * s.tp + nr) / (s.p + s.t + dr).clamp_min(eps)
    return _finish(score, s, eps=eps, log_loss=log_loss, empty_classes=empty_classes, reduction=reduction)


@register_loss(
    "jaccard_loss",
    batch_coupled=True,  # pooled over the batch by default (aggregation); per_sample/micro would shard
    aliases=("JaccardLoss", "jaccard"),
    refuses=_OVERLAP_REFUSES,
    inputs=_OVERLAP_INPUTS,
    params=_overlap_params(),
    description="1 - Jaccard index (|X∩Y| / |X∪Y|, soft IoU), averaged over classes.",
    source="lossd (soft Jaccard; conventions of smp and MONAI as parameters)",
    example=_overlap_example,
    equivalents=(
        Equivalent(
            "segmentation_models_pytorch.losses.JaccardLoss(mode='multiclass', smooth=1.0)",
            {"mode": "multiclass", "soft_label": True, "empty_classes": "zero", "smooth": 1.0},
            "",
        ),
        Equivalent(
            "pytorch_toolbelt.losses.JaccardLoss(mode='multilabel')",
            {"mode": "multilabel", "empty_classes": "zero"},
            "hard labels",
        ),
        Equivalent(
            "monai.losses.DiceLoss(sigmoid=True, jaccard=True)",
            {"mode": "multilabel", "aggregation": "per_sample", "smooth_nr": 5e-6, "smooth_dr": 5e-6, "eps": 0.0},
            "MONAI's Jaccard is (2I + nr) / (2(P + T - I) + dr): half its smoothing here",
        ),
    ),
)
def jaccard_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    mode: str,
    from_logits: bool,
    smooth: float,
    smooth_nr: float | None,
    smooth_dr: float | None,
    eps: float,
    ignore_index: int | None,
    include_background: bool,
    classes: list[int] | None,
    class_weights: list[float] | None,
    soft_label: bool,
    squared_pred: bool,
    aggregation: str,
    empty_classes: str,
    log_loss: bool,
    reduction: str,
    mask_target: str,
) -> torch.Tensor:
    """Per unit ``1 - (I + smooth_nr) / max(P + T - I + smooth_dr, eps)``."""
    s = overlap_stats(input, target, mode=mode, from_logits=from_logits, ignore_index=ignore_index,
                      include_background=include_background, classes=classes, class_weights=class_weights,
                      soft_label=soft_label, squared_pred=squared_pred, aggregation=aggregation, mask=mask,
                      mask_target=mask_target)
    nr, dr = _smooths(smooth, smooth_nr, smooth_dr)
    score = (s.tp + nr) / (s.p + s.t - s.tp + dr).clamp_min(eps)
    return _finish(score, s, eps=eps, log_loss=log_loss, empty_classes=empty_classes, reduction=reduction)


# Segmentation calls the soft Jaccard "IoU loss"; detection (mmdetection's IoULoss, UnitBox) calls a box loss so.
for _name in ("iou_loss", "IoULoss"):
    register_split_name(_name, "jaccard_loss (soft IoU of masks: smp and pytorch-toolbelt JaccardLoss) or, for boxes, "
                        "generalized_box_iou_loss, distance_box_iou_loss, complete_box_iou_loss")


_TVERSKY_REFUSES = (*_OVERLAP_REFUSES, "gamma_on 'mean' with a reduction other than 'mean'",
                    "squared_pred with alpha != beta",
                    "gamma other than 1 with the numerator's smoothing above the denominator's")


def _tversky_params(alpha: float, beta: float, gamma: float) -> tuple[Param, ...]:
    return _overlap_params(
        Param("alpha", "float", alpha, "Weight of false positives.", min=0.0),
        Param("beta", "float", beta, "Weight of false negatives.", min=0.0),
        Param("gamma", "float", gamma, "Exponent on the loss (focal Tversky); 1 is plain Tversky.",
              min=0.0, min_exclusive=True),
        Param("gamma_on", "string", "each",
              "Where gamma applies: 'each' class/unit loss before the mean (Abraham & Khan 2019), or the 'mean' "
              "(smp's TverskyLoss; needs reduction 'mean').", choices=("each", "mean")),
    )


def _tversky(
    input: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    mode: str,
    from_logits: bool,
    smooth: float,
    smooth_nr: float | None,
    smooth_dr: float | None,
    eps: float,
    alpha: float,
    beta: float,
    gamma: float,
    gamma_on: str,
    ignore_index: int | None,
    include_background: bool,
    classes: list[int] | None,
    class_weights: list[float] | None,
    soft_label: bool,
    squared_pred: bool,
    aggregation: str,
    empty_classes: str,
    log_loss: bool,
    reduction: str,
    mask_target: str,
) -> torch.Tensor:
    """Per unit ``(1 - (I + smooth_nr) / max(I + alpha*FP + beta*FN + smooth_dr, eps))^gamma``,
    ``FP = P - I``, ``FN = T - I``; the power is guarded (finite gradient where the loss is 0)."""
    require(gamma_on == "each" or reduction == "mean", "params.gamma_on", "'mean' needs reduction 'mean'")
    require(not squared_pred or alpha == beta, "params.squared_pred",
            f"needs alpha = beta (got {alpha}, {beta}): FP = Σ p² - Σ p·t can be negative, so the index can pass 1 "
            "(MONAI's TverskyLoss has no squared_pred; alpha = beta = 0.5 is dice_loss's)")
    s = overlap_stats(input, target, mode=mode, from_logits=from_logits, ignore_index=ignore_index,
                      include_background=include_background, classes=classes, class_weights=class_weights,
                      soft_label=soft_label, squared_pred=squared_pred, aggregation=aggregation, mask=mask,
                      mask_target=mask_target)
    nr, dr = _smooths(smooth, smooth_nr, smooth_dr)
    require(gamma == 1 or nr <= dr, "params.smooth_nr" if smooth_nr is not None else "params.smooth",
            f"is {nr}, above {'smooth_dr' if smooth_dr is not None else 'smooth'} {dr}: the index can then pass 1, "
            f"and a power gamma {gamma} of the negative 1 - index is NaN (gamma 1 computes it)")
    score = (s.tp + nr) / (s.tp + alpha * (s.p - s.tp) + beta * (s.t - s.tp) + dr).clamp_min(eps)
    return _finish(score, s, eps=eps, log_loss=log_loss, empty_classes=empty_classes, reduction=reduction,
                   gamma=gamma, gamma_on=gamma_on)


register_loss(
    "tversky_loss",
    batch_coupled=True,  # pooled over the batch by default (aggregation); per_sample/micro would shard
    aliases=("TverskyLoss", "tversky"),
    refuses=_TVERSKY_REFUSES,
    inputs=_OVERLAP_INPUTS,
    params=_tversky_params(0.5, 0.5, 1.0),
    description="(1 - Tversky index)^gamma with FP weight alpha, FN weight beta; alpha=beta=0.5 is Dice.",
    source="lossd (Salehi et al. 2017; conventions of smp, kornia, MONAI as parameters)",
    example=_overlap_example,
    equivalents=(
        Equivalent("segmentation_models_pytorch.losses.TverskyLoss(mode='multiclass', alpha=0.3, beta=0.7, gamma=1.5)",
                   {"mode": "multiclass", "alpha": 0.3, "beta": 0.7, "gamma": 1.5, "gamma_on": "mean",
                    "soft_label": True, "empty_classes": "zero"}, ""),
        Equivalent("kornia.losses.tversky_loss(pred, target, alpha=0.3, beta=0.7)",
                   {"mode": "multiclass", "alpha": 0.3, "beta": 0.7, "aggregation": "per_sample", "smooth_nr": 0.0,
                    "smooth_dr": 1e-8, "eps": 0.0, "ignore_index": -100, "empty_classes": "skip"},
                   "pred (N, C, H, W), target (N, H, W)"),
        Equivalent("monai.losses.TverskyLoss(softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7)",
                   {"mode": "multiclass", "alpha": 0.3, "beta": 0.7, "aggregation": "per_sample", "smooth_nr": 1e-5,
                    "smooth_dr": 1e-5, "eps": 0.0}, ""),
    ),
)(_tversky)

register_loss(
    "focal_tversky_loss",
    batch_coupled=True,  # pooled over the batch by default (aggregation); per_sample/micro would shard
    aliases=("FocalTverskyLoss", "focal_tversky"),
    refuses=_TVERSKY_REFUSES,
    inputs=_OVERLAP_INPUTS,
    params=_tversky_params(0.3, 0.7, 0.75),
    description="Focal Tversky loss (Abraham & Khan 2019): per class (1 - TI)^0.75, FN weighted 0.7, FP 0.3.",
    source="lossd (Abraham & Khan 2019: gamma = 1/(4/3), alpha = 0.7 on FN)",
    notes="The paper writes TI = TP / (TP + α·FN + (1-α)·FP) and the loss Σ_c (1 - TI_c)^(1/γ) with α = 0.7, "
          "γ = 4/3; here alpha weighs FP and beta FN (as smp, kornia, MONAI), gamma is the exponent itself. "
          "tversky_loss with the same parameters gives the same numbers.",
    example=_overlap_example,
    equivalents=(
        Equivalent("segmentation_models_pytorch.losses.TverskyLoss(mode='binary', alpha=0.3, beta=0.7, gamma=0.75)",
                   {"mode": "binary", "gamma_on": "mean", "soft_label": True, "empty_classes": "zero"}, ""),
    ),
)(_tversky)


@register_loss(
    "generalized_dice_loss",
    batch_coupled=True,  # aggregation "pooled" sums over the batch before dividing
    aliases=("GeneralizedDiceLoss", "generalised_dice_loss", "generalized_dice"),
    refuses=(*_TARGET_REFUSES, *_MASK_REFUSES, "include_background false in mode 'binary' or with one class"),
    inputs=_OVERLAP_INPUTS,
    params=(
        _MODE,
        _FROM_LOGITS,
        Param(
            "w_type",
            "string",
            "square",
            "Class weight from its target volume T: 'square' 1/T², 'simple' 1/T, "
            "'uniform' 1. A class with T = 0 gets the largest finite weight (MONAI).",
            choices=("square", "simple", "uniform"),
        ),
        Param("smooth_nr", "float", 1e-5, "Added to the numerator.", min=0.0),
        Param("smooth_dr", "float", 1e-5, "Added to the denominator.", min=0.0),
        Param(
            "aggregation",
            "string",
            "per_sample",
            "'per_sample': one score per sample (MONAI batch=False); 'pooled': sums over the batch first (batch=True).",
            choices=("per_sample", "pooled"),
        ),
        _IGNORE,
        _INCLUDE_BG,
        _SOFT_LABEL,
        Param(
            "reduction",
            "string",
            "mean",
            "'mean' or 'sum' over samples, or 'none' (N) per sample ((1) pooled).",
            choices=("none", "mean", "sum"),
        ),
    ),
    description="Generalized Dice (Sudre et al. 2017): classes weighted by inverse target volume, one score over "
    "classes.",
    source="lossd (Sudre et al. 2017; MONAI GeneralizedDiceLoss conventions)",
    example=lambda dt: {
        "input": torch.tensor([[[1.5, -0.5, 0.3], [0.2, -2.0, 0.4]], [[-1.0, 2.0, 0.0], [0.7, 0.1, -0.3]]], dtype=dt),
        "target": torch.tensor([[0, 1, 1], [1, 0, 1]]),
        "params": {"mode": "multiclass"},
    },
    equivalents=(
        Equivalent(
            "monai.losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True)",
            {"mode": "multiclass"},
            "target (N, *) class indices",
        ),
        Equivalent(
            "monai.losses.GeneralizedDiceLoss(sigmoid=True, w_type='simple', batch=True)",
            {"mode": "multilabel", "w_type": "simple", "aggregation": "pooled"},
            "",
        ),
    ),
)
def generalized_dice_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    mode: str,
    from_logits: bool,
    w_type: str,
    smooth_nr: float,
    smooth_dr: float,
    aggregation: str,
    ignore_index: int | None,
    include_background: bool,
    soft_label: bool,
    reduction: str,
) -> torch.Tensor:
    """``w_c = 1/T_c²`` (square); per sample ``1 - (2 Σ_c w_c I_c + nr) / (Σ_c w_c (P_c + T_c) + dr)``."""
    s = overlap_stats(input, target, mode=mode, from_logits=from_logits, ignore_index=ignore_index,
                      include_background=include_background, classes=None, class_weights=None,
                      soft_label=soft_label, squared_pred=False, aggregation=aggregation, mask=mask)
    t = s.t.detach()
    if w_type == "uniform":
        w = torch.ones_like(t)
    else:  # in float32 for half types, as MONAI: 1/T² of 256 half pixels overflowed to a weight of 0
        tw = widened(t)
        w = torch.where(tw > 0, 1 / (tw * tw if w_type == "square" else tw).clamp_min(torch.finfo(tw.dtype).tiny),
                        torch.zeros_like(tw))
        largest = w.amax(dim=-1, keepdim=True)
        w = torch.where(tw > 0, w, largest.expand_as(w)).to(t.dtype)
    score = (2 * (s.tp * w).sum(-1) + smooth_nr) / ((s.p + s.t) * w).sum(-1).add(smooth_dr)
    loss = (1 - score).reshape(-1)
    return s.narrowed(loss if reduction == "none" else (loss.sum() if reduction == "sum" else loss.mean()))


@register_loss(
    "mcc_loss",
    batch_coupled=True,  # pooled over the batch by default (aggregation)
    aliases=("MCCLoss", "mcc"),
    refuses=(*_TARGET_REFUSES, "include_background false in mode 'binary' or with one class",
             "eps and smooth_dr both 0 (the coefficient is 0/0 where a prediction or target is empty)"),
    inputs=_OVERLAP_INPUTS[:2],
    params=(
        _MODE,
        Param(
            "from_logits",
            "bool",
            False,
            "Apply sigmoid/softmax to input first (smp's MCCLoss takes probabilities; MONAI's sigmoid/softmax).",
        ),
        Param("eps", "float", 1e-5, "Added to each of TP, TN, FP, FN (smp).", min=0.0),
        Param("smooth_nr", "float", 0.0, "Added to the numerator TP·TN - FP·FN (MONAI's smooth_nr).", min=0.0),
        Param(
            "smooth_dr", "float", 0.0, "Added under the square root of the denominator (MONAI's smooth_dr).", min=0.0
        ),
        _INCLUDE_BG,
        Param(
            "aggregation",
            "string",
            "pooled",
            "'pooled': one coefficient per class over the whole batch (smp; MONAI batch=True); 'per_sample': one "
            "per sample and class (MONAI batch=False).",
            choices=("pooled", "per_sample"),
        ),
        Param(
            "reduction",
            "string",
            "mean",
            "'mean' or 'sum' over units, or 'none': per class (C) pooled, (N, C) per_sample.",
            choices=("none", "mean", "sum"),
        ),
    ),
    description="1 - Matthews correlation coefficient of soft TP, TN, FP, FN, per class (binary: one class).",
    source="lossd (Abhishek & Hamarneh 2021; smp and MONAI MCCLoss conventions as parameters)",
    notes="A unit with FP = FN = 0 (a perfect prediction, counts after eps) has loss 0, the coefficient's limit "
    "(MONAI); eps or smooth_dr must be > 0, else the coefficient is 0/0 where a prediction or target is empty. "
    "Half precision is computed in float32 and the loss cast back.",
    example=lambda dt: {
        "input": torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.7, 0.4]], dtype=dt),
        "target": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=dt),
    },
    equivalents=(
        Equivalent("segmentation_models_pytorch.losses.MCCLoss()", {}, "input holds probabilities"),
        Equivalent(
            "monai.losses.MCCLoss(sigmoid=True)",
            {"mode": "multilabel", "from_logits": True, "eps": 0.0, "smooth_dr": 1e-5, "aggregation": "per_sample"},
            "input and target (N, C, *)",
        ),
        Equivalent(
            "monai.losses.MCCLoss(softmax=True, to_onehot_y=True, include_background=False, batch=True, "
            "reduction='none')",
            {
                "mode": "multiclass",
                "from_logits": True,
                "eps": 0.0,
                "smooth_dr": 1e-5,
                "include_background": False,
                "reduction": "none",
            },
            "target (N, *) class indices",
        ),
    ),
)
def mcc_loss(input: torch.Tensor, target: torch.Tensor, *, mode: str, from_logits: bool, eps: float, smooth_nr: float,
             smooth_dr: float, include_background: bool, aggregation: str, reduction: str) -> torch.Tensor:
    """Per unit ``TP = Σ p·t + eps``, ``TN = Σ (1-p)(1-t) + eps``, ``FP``, ``FN`` likewise;
    ``1 - (TP·TN - FP·FN + smooth_nr) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN) + smooth_dr)``, 0 where FP = FN = 0."""
    require(eps > 0 or smooth_dr > 0, "params.smooth_dr",
            "eps or smooth_dr must be > 0 (otherwise the coefficient is 0/0 where a prediction or target is empty)")
    # Half inputs in float32: the denominator's product of eps-sized counts (1.6e-6 for a perfect prediction)
    # underflows float16, and the square root's gradient overflows (NaN).
    probs, onehot = _probabilities(widened(input), target, mode, from_logits, None)
    kept = _kept_classes(probs.shape[1], mode, include_background, None, None)
    if kept is not None:
        index = torch.tensor(kept, device=input.device)
        probs, onehot = probs.index_select(1, index), onehot.index_select(1, index)
    dims = (0, 2) if aggregation == "pooled" else (2,)
    tp = (probs * onehot).sum(dims) + eps
    tn = ((1 - probs) * (1 - onehot)).sum(dims) + eps
    fp = (probs * (1 - onehot)).sum(dims) + eps
    fn = ((1 - probs) * onehot).sum(dims) + eps
    perfect = (fp == 0) & (fn == 0)
    denominator = torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn) + smooth_dr)
    safe = torch.where(perfect, torch.ones_like(denominator), denominator)
    loss = reduce(torch.where(perfect, torch.zeros_like(safe), 1 - (tp * tn - fp * fn + smooth_nr) / safe), reduction)
    return narrowed(loss, input.dtype)
