"""Losses people most often write themselves: quantile (pinball), log-cosh, and the
contrastive losses (InfoNCE, SimCLR's NT-Xent, Barlow Twins). The overlap losses
(Dice, Jaccard, Tversky) are in ``_overlap.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ._registry import (
    REDUCTION,
    Equivalent,
    Input,
    Param,
    Work,
    narrowed,
    reduce,
    register_loss,
    require,
    require_same_shape,
    widened,
)

__all__: list[str] = []


def _rows(t: Any) -> int:
    return int(t.shape[0]) if isinstance(t, torch.Tensor) and t.dim() >= 1 else 0


def _info_nce_logits(bound: Mapping[str, Any], params: Mapping[str, Any]) -> int:
    n, negatives = _rows(bound["query"]), bound.get("negative_keys")
    if negatives is None:
        return n * n  # each query against every key
    return n * (1 + _rows(negatives)) if negatives.dim() == 2 else 0  # paired: no larger than the negatives


#: The tensors the contrastive losses build, quadratic in their rows or features.
_INFO_NCE_WORK = Work("the query-key logits (N² without negative_keys, N·(1 + M) with M unpaired ones)",
                      "inputs.query", _info_nce_logits)
_NT_XENT_WORK = Work("the (2N)² similarity matrix", "inputs.input",
                     lambda bound, params: (2 * _rows(bound["input"])) ** 2)
_BARLOW_WORK = Work("the D × D cross-correlation", "inputs.input",
                    lambda bound, params: int(bound["input"].shape[-1]) ** 2 if bound["input"].dim() == 2 else 0)

def _quantile_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[0.5, 1.0, 2.0], [1.5, 2.0, 2.5]], dtype=dt),
        "target": torch.tensor([1.2, 2.2], dtype=dt),
        "params": {"quantiles": [0.1, 0.5, 0.9]},
    }


@register_loss(
    "quantile_loss",
    aliases=("QuantileLoss", "pinball_loss", "pinball"),
    refuses=("an input shaped unlike the target (one quantile) or unlike the target's shape plus one column per "
             "quantile (several)",),
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
    refuses=("an input shaped unlike the target",),
    aliases=("LogCoshLoss", "log_cosh", "logcosh"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="predictions, any shape"),
        Input("target", "target", differentiable=True, aliases=("y_true",), doc="targets, same shape"),
    ),
    params=(REDUCTION,),
    description="log(cosh(input - target)): quadratic near 0, linear far away; overflow-free.",
    source="lossd",
    example=_pair_example,
    equivalents=(Equivalent("pytorch_toolbelt.losses.LogCoshLoss()", {}, ""),),
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
    aliases=("InfoNCE", "InfoNCELoss", "info_nce"),
    refuses=("a query not (N, D) with N >= 1", "a positive_key shaped unlike the query",
             "negative_keys not (M, D) (unpaired) or (N, M, D) (paired)"),
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
    work=_INFO_NCE_WORK,
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


def _two_views_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [-0.5, 0.4, 1.0]], dtype=dt),
        "target": torch.tensor([[0.9, 0.1, 0.4], [0.0, 1.2, -0.1], [-0.4, 0.5, 0.8]], dtype=dt),
    }


_TWO_VIEWS = (
    Input(
        "input",
        "prediction",
        differentiable=True,
        aliases=("y_pred", "z_i", "z1"),
        doc="first view's embeddings (N, D)",
    ),
    Input(
        "target",
        "target",
        differentiable=True,
        aliases=("y_true", "z_j", "z2"),
        doc="second view's embeddings (N, D); row i is the same sample as input's row i",
    ),
)


def _require_two_views(input: torch.Tensor, target: torch.Tensor, min_rows: int) -> None:
    require(input.dim() == 2, "inputs.input", f"must be (N, D), got shape {list(input.shape)}")
    require(input.shape[0] >= min_rows, "inputs.input", f"needs at least {min_rows} rows, got {input.shape[0]}")
    require(target.shape == input.shape, "inputs.target",
            f"shape {list(target.shape)} must equal input's {list(input.shape)}")


@register_loss(
    "nt_xent_loss",
    batch_coupled=True,  # each embedding's negatives are the batch's other embeddings
    aliases=("NTXentLoss", "nt_xent", "simclr_loss"),
    refuses=("an input not (N, D) with N >= 1", "a target shaped unlike the input"),
    inputs=_TWO_VIEWS,
    params=(
        Param("temperature", "float", 0.5, "Softmax temperature τ.", min=0.0, min_exclusive=True),
        Param("reduction", "string", "mean", "'mean' over the 2N anchors, 'sum', or 'none' (2N): both views' rows.",
              choices=("none", "mean", "sum")),
    ),
    description="SimCLR's NT-Xent: each of the 2N embeddings against the other 2N - 1, its other view the positive.",
    source="lossd (Chen et al. 2020, SimCLR; MONAI ContrastiveLoss conventions)",
    notes="Symmetric over both views; info_nce_loss is the one-directional form (queries against keys).",
    example=_two_views_example,
    equivalents=(Equivalent("monai.losses.ContrastiveLoss(temperature=0.5)", {}, ""),),
    work=_NT_XENT_WORK,
)
def nt_xent_loss(input: torch.Tensor, target: torch.Tensor, *, temperature: float, reduction: str) -> torch.Tensor:
    """``z = normalize([input; target])``, ``s = z zᵀ / τ`` without its diagonal; anchor k's positive is
    row ``k ± N``; loss_k = ``-s[k, pos] + logsumexp_{j≠k} s[k, j]``."""
    _require_two_views(input, target, 1)
    n = input.shape[0]
    z = F.normalize(torch.cat([input, target], dim=0), dim=1)
    logits = (z @ z.transpose(0, 1)) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positives, reduction=reduction)


@register_loss(
    "barlow_twins_loss",
    batch_coupled=True,  # the cross-correlation is standardised over the batch
    aliases=("BarlowTwinsLoss", "barlow_twins"),
    refuses=("an input not (N, D) with N >= 2 (the standardisation needs two samples)",
             "a target shaped unlike the input"),
    inputs=_TWO_VIEWS,
    params=(
        Param("lambd", "float", 5e-3, "Weight of the off-diagonal (redundancy) terms.", min=0.0),
        Param("normalization", "string", "std",
              "How each feature is standardised over the batch: 'std' (z - mean) / (unbiased std + 1e-6) (MONAI), "
              "or 'batch_norm' (z - mean) / sqrt(biased var + 1e-5) (the paper's BatchNorm1d(affine=False)).",
              choices=("std", "batch_norm")),
    ),
    description="Barlow Twins (Zbontar et al. 2021): Σ (1 - C_ii)² + λ Σ_{i≠j} C_ij², C the batch cross-correlation.",
    source="lossd (Zbontar et al. 2021; MONAI BarlowTwinsLoss conventions)",
    notes="Half precision is computed in float32 and the loss cast back (MONAI computes C - I in float32).",
    example=_two_views_example,
    equivalents=(Equivalent("monai.losses.BarlowTwinsLoss(lambd=5e-3)", {}, ""),),
    work=_BARLOW_WORK,
)
def barlow_twins_loss(input: torch.Tensor, target: torch.Tensor, *, lambd: float, normalization: str) -> torch.Tensor:
    """``C = ẑ1ᵀ ẑ2 / N`` of the standardised views; ``Σ_i (C_ii - 1)² + lambd · Σ_{i≠j} C_ij²``. Half precision is
    computed in float32 and the loss cast back, as MONAI's ``C - eye`` (float32) does: ``Σ_{i≠j} C_ij²`` over D²
    terms passed float16's 65504 (an inf loss, NaN gradients) where ``lambd`` times it is finite."""
    _require_two_views(input, target, 2)
    n, dtype = input.shape[0], torch.promote_types(input.dtype, target.dtype)
    input, target = widened(input), widened(target)

    def standardise(z: torch.Tensor) -> torch.Tensor:
        centred = z - z.mean(0)
        if normalization == "std":
            return centred / z.std(0).add(1e-6)
        return centred / torch.sqrt(z.var(0, unbiased=False) + 1e-5)

    c = standardise(input).transpose(0, 1) @ standardise(target) / n
    diagonal = torch.diagonal(c)
    on = (diagonal - 1).pow(2).sum()
    off = c.pow(2).masked_fill(torch.eye(c.shape[0], dtype=torch.bool, device=c.device), 0).sum()
    return narrowed(on + lambd * off, dtype)
