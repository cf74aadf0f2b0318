"""Losses people most often write themselves: overlap (Dice, Jaccard, Tversky),
quantile (pinball), log-cosh and InfoNCE. Parameter names follow
segmentation_models_pytorch and kornia where they exist.
"""

from __future__ import annotations

import math

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

__all__: list[str] = []

_OVERLAP_INPUTS = (
    Input("input", "prediction", differentiable=True, aliases=("y_pred",),
          doc="logits or probabilities: binary (N, *) or (N, 1, *); multiclass/multilabel (N, C, *)"),
    Input("target", "target", kind="float|int", aliases=("y_true",),
          doc="binary/multilabel: 0/1 mask shaped like input; multiclass: class indices (N, *)"),
)


def _overlap_params(*extra: Param) -> tuple[Param, ...]:
    return (
        Param("mode", "string", "binary", "'binary', 'multiclass' (softmax over dim 1) or 'multilabel' (sigmoid).",
              choices=("binary", "multiclass", "multilabel")),
        Param("from_logits", "bool", True, "Apply sigmoid/softmax to input first (false: input holds probabilities)."),
        Param("smooth", "float", 0.0, "Added to numerator and denominator.", min=0.0),
        Param("eps", "float", 1e-7, "Lower bound of the denominator.", min=0.0),
        *extra,
    )


def _overlap_stats(input: torch.Tensor, target: torch.Tensor, mode: str, from_logits: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class: (intersection, sum of probabilities, sum of targets), summed over batch and space."""
    require(input.dim() >= 1 and input.shape[0] > 0, "inputs.input", "needs a non-empty batch dimension")
    if mode == "multiclass":
        require(input.dim() >= 2, "inputs.input", f"multiclass needs (N, C, *), got shape {list(input.shape)}")
        n_classes = input.shape[1]
        expected = [input.shape[0], *input.shape[2:]]
        require(not target.is_floating_point(), "inputs.target", "multiclass needs integer class indices")
        require(list(target.shape) == expected, "inputs.target", f"shape {list(target.shape)} must be {expected}")
        require_class_indices(target, n_classes)
        probs = input.softmax(dim=1) if from_logits else input
        onehot = F.one_hot(target, n_classes).movedim(-1, 1).to(input.dtype)
    else:
        require_same_shape(input, target, f"{mode} targets are a mask shaped like input")
        target = target.to(input.dtype)
        require_unit_interval(target, "inputs.target", "mask values")
        probs = torch.sigmoid(input) if from_logits else input
        onehot = target
        if mode == "binary" or input.dim() == 1:
            probs, onehot = probs.reshape(probs.shape[0], 1, -1), onehot.reshape(onehot.shape[0], 1, -1)
    if not from_logits:
        require(
            ((input >= 0) & (input <= 1)).all(), "inputs.input", "probabilities must lie in [0, 1] (from_logits=false)"
        )
    probs = probs.reshape(probs.shape[0], probs.shape[1], -1)
    onehot = onehot.reshape(onehot.shape[0], onehot.shape[1], -1)
    dims = (0, 2)
    return (probs * onehot).sum(dims), probs.sum(dims), onehot.sum(dims)


def _overlap_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[[1.5, -0.5], [0.2, -2.0]], [[-1.0, 2.0], [0.7, 0.1]]], dtype=dt),
        "target": torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]], dtype=dt),
    }


@register_loss(
    "dice_loss",
    aliases=("DiceLoss", "dice"),
    inputs=_OVERLAP_INPUTS,
    params=_overlap_params(),
    description="1 - Dice coefficient (2|X∩Y| / (|X|+|Y|)), averaged over classes.",
    source="lossd (segmentation_models_pytorch DiceLoss formula)",
    example=_overlap_example,
)
def dice_loss(
    input: torch.Tensor, target: torch.Tensor, *, mode: str, from_logits: bool, smooth: float, eps: float
) -> torch.Tensor:
    """Per class ``1 - (2*I + smooth) / max(P + T + smooth, eps)``, mean over classes;
    I, P, T sum over batch and spatial dims."""
    inter, p, t = _overlap_stats(input, target, mode, from_logits)
    score = (2 * inter + smooth) / (p + t + smooth).clamp_min(eps)
    return (1 - score).mean()


@register_loss(
    "jaccard_loss",
    aliases=("JaccardLoss", "jaccard", "iou_loss"),
    inputs=_OVERLAP_INPUTS,
    params=_overlap_params(),
    description="1 - Jaccard index (|X∩Y| / |X∪Y|, soft IoU), averaged over classes.",
    source="lossd (segmentation_models_pytorch JaccardLoss formula)",
    example=_overlap_example,
)
def jaccard_loss(
    input: torch.Tensor, target: torch.Tensor, *, mode: str, from_logits: bool, smooth: float, eps: float
) -> torch.Tensor:
    """Per class ``1 - (I + smooth) / max(P + T - I + smooth, eps)``, mean over classes."""
    inter, p, t = _overlap_stats(input, target, mode, from_logits)
    score = (inter + smooth) / (p + t - inter + smooth).clamp_min(eps)
    return (1 - score).mean()


@register_loss(
    "tversky_loss",
    aliases=("TverskyLoss", "tversky", "focal_tversky_loss"),
    inputs=_OVERLAP_INPUTS,
    params=_overlap_params(
        Param("alpha", "float", 0.5, "Weight of false positives.", min=0.0),
        Param("beta", "float", 0.5, "Weight of false negatives.", min=0.0),
        Param("gamma", "float", 1.0, "Focal exponent on (1 - index); 1 is plain Tversky.", min=0.0, min_exclusive=True),
    ),
    description="(1 - Tversky index)^gamma with FP weight alpha, FN weight beta; alpha=beta=0.5 is Dice.",
    source="lossd (segmentation_models_pytorch TverskyLoss formula)",
    example=_overlap_example,
)
def tversky_loss(input: torch.Tensor, target: torch.Tensor, *, mode: str, from_logits: bool, smooth: float, eps: float,
                 alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """Per class ``(1 - (I + smooth) / max(I + alpha*FP + beta*FN + smooth, eps))^gamma`` with
    ``FP = P - I``, ``FN = T - I``; mean over classes."""
    inter, p, t = _overlap_stats(input, target, mode, from_logits)
    score = (inter + smooth) / (inter + alpha * (p - inter) + beta * (t - inter) + smooth).clamp_min(eps)
    return ((1 - score) ** gamma).mean()


def _quantile_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[0.5, 1.0, 2.0], [1.5, 2.0, 2.5]], dtype=dt),
        "target": torch.tensor([1.2, 2.2], dtype=dt),
        "params": {"quantiles": [0.1, 0.5, 0.9]},
    }


@register_loss(
    "quantile_loss",
    aliases=("QuantileLoss", "pinball_loss", "pinball"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",),
              doc="predictions: target's shape for one quantile, or (*target.shape, Q) for Q quantiles"),
        Input("target", "target", differentiable=True, aliases=("y_true",), doc="observed values"),
    ),
    params=(
        Param("quantiles", "float_list", [0.5], "Quantile levels in (0, 1), one per last-dim column of input.",
              min=0.0, max=1.0, min_exclusive=True, max_exclusive=True),
        REDUCTION,
    ),
    description="Pinball loss max(q*(y - ŷ), (q - 1)*(y - ŷ)) for one or several quantiles.",
    source="lossd (quantile regression)",
    example=_quantile_example,
)
def quantile_loss(input: torch.Tensor, target: torch.Tensor, *, quantiles: list[float], reduction: str) -> torch.Tensor:
    """``e = target - input``; per element ``max(q * e, (q - 1) * e)``. With several quantiles
    input has a trailing dimension Q and target is broadcast along it."""
    if len(quantiles) == 1:
        require_same_shape(input, target, "one quantile: one prediction per target")
        q = torch.tensor(quantiles[0], dtype=input.dtype, device=input.device)
        error = target - input
    else:
        expected = [*target.shape, len(quantiles)]
        require(list(input.shape) == expected, "inputs.input",
                f"shape {list(input.shape)} must be {expected}: target's shape plus one column per quantile")
        q = torch.tensor(quantiles, dtype=input.dtype, device=input.device)
        error = target.unsqueeze(-1) - input
    return reduce(torch.maximum(q * error, (q - 1) * error), reduction)


def _pair_example(dt: torch.dtype) -> dict[str, object]:
    return {"input": torch.tensor([0.5, -1.0, 3.0], dtype=dt), "target": torch.tensor([1.0, -1.5, 0.0], dtype=dt)}


@register_loss(
    "log_cosh_loss",
    aliases=("LogCoshLoss", "log_cosh", "logcosh"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="predictions, any shape"),
        Input("target", "target", differentiable=True, aliases=("y_true",), doc="targets, same shape"),
    ),
    params=(REDUCTION,),
    description="log(cosh(input - target)): quadratic near 0, linear far away; overflow-free.",
    source="lossd",
    example=_pair_example,
)
def log_cosh_loss(input: torch.Tensor, target: torch.Tensor, *, reduction: str) -> torch.Tensor:
    """``log(cosh(x))`` computed as ``|x| + softplus(-2|x|) - log 2`` (no overflow for large x)."""
    require_same_shape(input, target, "the loss is elementwise")
    x = input - target
    return reduce(x.abs() + F.softplus(-2 * x.abs()) - math.log(2.0), reduction)


def _info_nce_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "query": torch.tensor([[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [-0.5, 0.4, 1.0]], dtype=dt),
        "positive_key": torch.tensor([[0.9, 0.1, 0.4], [0.0, 1.2, -0.1], [-0.4, 0.5, 0.8]], dtype=dt),
        "params": {"temperature": 0.1},
    }


@register_loss(
    "info_nce_loss",
    batch_coupled=True,  # each query's negatives are the batch's other keys
    aliases=("InfoNCE", "InfoNCELoss", "info_nce", "nt_xent"),
    inputs=(
        Input("query", "prediction", differentiable=True, aliases=("y_pred", "input"), doc="embeddings (N, D)"),
        Input(
            "positive_key",
            "target",
            differentiable=True,
            aliases=("y_true", "target"),
            doc="matching embeddings (N, D); row i is query i's positive",
        ),
        Input(
            "negative_keys",
            "negatives",
            differentiable=True,
            required=False,
            doc="unpaired (M, D) or paired (N, M, D); absent: the other rows of positive_key are the negatives",
        ),
    ),
    params=(
        Param("temperature", "float", 0.1, "Softmax temperature.", min=0.0, min_exclusive=True),
        REDUCTION,
        Param(
            "negative_mode",
            "string",
            "unpaired",
            "'unpaired': negatives shared (M, D); 'paired': per query (N, M, D).",
            choices=("unpaired", "paired"),
        ),
    ),
    description="InfoNCE contrastive loss on L2-normalised embeddings (in-batch negatives by default).",
    source="lossd (van den Oord et al. 2018; info-nce-pytorch conventions)",
    example=_info_nce_example,
)
def info_nce_loss(query: torch.Tensor, positive_key: torch.Tensor, negative_keys: torch.Tensor | None, *,
                  temperature: float, reduction: str, negative_mode: str) -> torch.Tensor:
    """Embeddings are L2-normalised. Without negatives: ``logits = q @ k.T / T`` and the label of
    row i is i. With negatives: ``logits = [q·k_i, q·n_1..n_M] / T`` and the label is 0.
    Loss = cross entropy of the logits."""
    require(query.dim() == 2, "inputs.query", f"must be (N, D), got shape {list(query.shape)}")
    require(query.shape[0] > 0, "inputs.query", "needs at least one row")
    require(positive_key.shape == query.shape, "inputs.positive_key",
            f"shape {list(positive_key.shape)} must equal query's {list(query.shape)}")
    q = F.normalize(query, dim=-1)
    k = F.normalize(positive_key, dim=-1)
    if negative_keys is None:
        logits = q @ k.transpose(0, 1)
        labels = torch.arange(q.shape[0], device=q.device)
    else:
        n, d = query.shape
        if negative_mode == "unpaired":
            require(negative_keys.dim() == 2 and negative_keys.shape[1] == d, "inputs.negative_keys",
                    f"unpaired negatives must be (M, {d}), got shape {list(negative_keys.shape)}")
        else:
            require(
                negative_keys.dim() == 3 and negative_keys.shape[0] == n and negative_keys.shape[2] == d,
                "inputs.negative_keys",
                f"paired negatives must be ({n}, M, {d}), got shape {list(negative_keys.shape)}",
            )
        neg = F.normalize(negative_keys, dim=-1)
        positive_logit = (q * k).sum(dim=1, keepdim=True)
        if negative_mode == "unpaired":
            negative_logits = q @ neg.transpose(0, 1)
        else:
            negative_logits = (q.unsqueeze(1) @ neg.transpose(1, 2)).squeeze(1)
        logits = torch.cat([positive_logit, negative_logits], dim=1)
        labels = torch.zeros(n, dtype=torch.long, device=q.device)
    return F.cross_entropy(logits / temperature, labels, reduction=reduction)
