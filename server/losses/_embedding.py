"""Embedding and metric losses from ``torch.nn``: hinge/cosine embedding, margin ranking,
triplet margin (with a fixed set of named distance functions), cosine similarity and
pairwise distance.

Torch computes the ±1-target losses for any target value; lossd does too, with a warning
naming the field and the documented domain (refused when the request is strict). Integer,
bool and complex inputs go to torch as they are, where torch computes them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ._classification import SIGNS
from ._registry import REDUCTION, Domain, Input, Param, param_bound, register_loss, require

__all__ = ["DISTANCE_FUNCTIONS"]


def _pm_one(target: torch.Tensor) -> None:
    """Targets of the ±1 losses: 1 or -1 is the documented domain; torch computes any value."""
    SIGNS.check(((target == 1) | (target == -1)).all())


def _cosine_distance(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(x1, x2, dim=-1)


def _l1_distance(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    return F.pairwise_distance(x1, x2, p=1.0)


def _squared_euclidean(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    return (x1 - x2).pow(2).sum(dim=-1)


#: The distance functions ``triplet_margin_with_distance_loss`` offers, by name. Clients
#: choose one by name; they never send code. ``None`` means torch's default
#: (``torch.pairwise_distance``, p=2, eps=1e-6).
DISTANCE_FUNCTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None] = {
    "pairwise_distance": None,
    "cosine_distance": _cosine_distance,
    "l1": _l1_distance,
    "squared_euclidean": _squared_euclidean,
}


# ---------------------------------------------------------------------------------------
# hinge_embedding_loss


def _hinge_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[0.3, 1.5, -0.2], [0.8, 0.1, 2.0]], dtype=dt),
        "target": torch.tensor([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]], dtype=dt),
    }


@register_loss(
    "hinge_embedding_loss",
    broadcasts=("input", "target"),
    aliases=("HingeEmbeddingLoss", "hinge_embedding"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",),
              doc="distances (often an L1 distance), any shape"),
        Input("target", "target", kind="float|int", differentiable=True, aliases=("y_true",),
              doc="1 (similar) or -1 (dissimilar), same shape as input (or broadcastable)"),
    ),
    params=(
        REDUCTION,
        Param("margin", "float", 1.0, "Margin for the dissimilar pairs (target -1)."),
    ),
    description="Hinge embedding loss: x where y=1, max(0, margin - x) where y=-1.",
    source="torch.nn.functional.hinge_embedding_loss",
    legacy_reduction=True,
    example=_hinge_example,
    domain=(SIGNS,),
    refuses=("shapes torch cannot match (torch's own error)",),
)
def hinge_embedding_loss(
    input: torch.Tensor, target: torch.Tensor, *, reduction: str, margin: float
) -> torch.Tensor:
    r"""``l_n = x_n`` if ``y_n = 1``; ``max(0, margin - x_n)`` if ``y_n = -1``.

    Shapes: input ``(*)``, target ``(*)`` with values in {1, -1}; output scalar, or ``(*)``
    for ``reduction='none'``.
    """
    _pm_one(target)
    return F.hinge_embedding_loss(input, target, margin=margin, reduction=reduction)


# ---------------------------------------------------------------------------------------
# cosine_embedding_loss


_COSINE_MARGIN = Domain("params.margin", "a margin in [-1, 1]", "torch compares the cosine with any margin")


def _cosine_embedding_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input1": torch.tensor([[1.0, 0.5, -0.5], [0.2, -1.0, 0.3]], dtype=dt),
        "input2": torch.tensor([[0.8, 0.4, -0.2], [0.5, 0.9, 0.1]], dtype=dt),
        "target": torch.tensor([1.0, -1.0], dtype=dt),
    }


@register_loss(
    "cosine_embedding_loss",
    broadcasts=("input1", "input2"),
    aliases=("CosineEmbeddingLoss", "cosine_embedding"),
    inputs=(
        Input("input1", "first embedding", differentiable=True, aliases=("y_pred",),
              doc="embeddings, (N, D) or (D)"),
        Input("input2", "second embedding", differentiable=True, aliases=("y_true",),
              doc="embeddings, same shape as input1"),
        Input("target", "target", kind="float|int", differentiable=True,
              doc="1 (similar) or -1 (dissimilar), (N) or ()"),
    ),
    params=(
        REDUCTION,
        Param("margin", "float", 0.0, "Margin for the dissimilar pairs; in [-1, 1], 0 to 0.5 is suggested."),
    ),
    description="Cosine embedding loss: 1 - cos(x1, x2) where y=1, max(0, cos(x1, x2) - margin) where y=-1.",
    source="torch.nn.functional.cosine_embedding_loss",
    legacy_reduction=True,
    example=_cosine_embedding_example,
    domain=(SIGNS, _COSINE_MARGIN),
    refuses=("shapes torch cannot match (torch's own error)",),
)
def cosine_embedding_loss(
    input1: torch.Tensor, input2: torch.Tensor, target: torch.Tensor, *, reduction: str, margin: float
) -> torch.Tensor:
    r"""``l_n = 1 - cos(x1_n, x2_n)`` if ``y_n = 1``; ``max(0, cos(x1_n, x2_n) - margin)`` if ``y_n = -1``.

    Shapes: input1, input2 ``(N, D)`` or ``(D)``; target ``(N)`` or ``()`` with values in
    {1, -1}; output scalar, or ``(N)`` / ``()`` for ``reduction='none'``.
    """
    _pm_one(target)
    _COSINE_MARGIN.check(-1.0 <= margin <= 1.0)
    return F.cosine_embedding_loss(input1, input2, target, margin=margin, reduction=reduction)


# ---------------------------------------------------------------------------------------
# margin_ranking_loss


def _ranking_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input1": torch.tensor([0.8, -0.3, 1.2, 0.1], dtype=dt),
        "input2": torch.tensor([0.5, 0.4, -1.0, 0.1], dtype=dt),
        "target": torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=dt),
        "params": {"margin": 0.5},
    }


@register_loss(
    "margin_ranking_loss",
    broadcasts=("input1", "input2", "target"),
    aliases=("MarginRankingLoss", "margin_ranking"),
    inputs=(
        Input("input1", "first score", differentiable=True, aliases=("y_pred",), doc="scores, (N) or ()"),
        Input("input2", "second score", differentiable=True, aliases=("y_true",),
              doc="scores, same shape as input1"),
        Input("target", "target", kind="float|int", differentiable=True,
              doc="1 (input1 should rank higher) or -1 (input2 should), same shape as input1"),
    ),
    params=(
        REDUCTION,
        Param("margin", "float", 0.0, "Margin by which the higher-ranked score should win."),
    ),
    description="Margin ranking loss: max(0, -y * (x1 - x2) + margin).",
    source="torch.nn.functional.margin_ranking_loss",
    legacy_reduction=True,
    example=_ranking_example,
    domain=(SIGNS,),
    refuses=("shapes torch cannot match (torch's own error)",),
)
def margin_ranking_loss(
    input1: torch.Tensor, input2: torch.Tensor, target: torch.Tensor, *, reduction: str, margin: float
) -> torch.Tensor:
    r"""``l_n = max(0, -y_n * (x1_n - x2_n) + margin)``.

    Shapes: input1, input2, target ``(N)`` or ``()`` (target in {1, -1}); output scalar, or
    ``(N)`` / ``()`` for ``reduction='none'``. A float target gets a gradient, as in torch.
    """
    _pm_one(target)
    return F.margin_ranking_loss(input1, input2, target, margin=margin, reduction=reduction)


# ---------------------------------------------------------------------------------------
# triplet_margin_loss and triplet_margin_with_distance_loss


def _triplet_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "anchor": torch.tensor([[0.0, 1.0, 0.5], [1.0, -1.0, 0.0]], dtype=dt),
        "positive": torch.tensor([[0.1, 0.9, 0.4], [0.5, -1.5, 0.5]], dtype=dt),
        "negative": torch.tensor([[0.5, 0.5, 0.5], [1.2, -0.8, 0.1]], dtype=dt),
    }


_ANCHOR = Input("anchor", "anchor", differentiable=True, aliases=("y_pred",), doc="embeddings, (N, D) or (D)")
_POSITIVE = Input("positive", "positive example", differentiable=True, aliases=("y_true",),
                  doc="embeddings, same number of dims as anchor")
_NEGATIVE = Input("negative", "negative example", differentiable=True,
                  doc="embeddings, same number of dims as anchor")
_SWAP = Param("swap", "bool", False,
              "Use the distance swap (Balntas et al.): min(d(a, n), d(p, n)) as the negative distance.")
_TRIPLET_MARGIN = Param("margin", "float", 1.0, "Margin between positive and negative distances.",
                        min=0.0, min_exclusive=True)
#: torch documents the p-norm (p > 0) and eps >= 0, and computes other values as they are.
_NORM_DEGREE = param_bound("p", "p > 0 (a norm)", "torch computes p <= 0 as it is: p = 0 counts the "
                           "nonzero differences, p < 0 is no norm")
_DIFF_EPS = param_bound("eps", "eps >= 0", "torch adds a negative eps to the differences as it is")


@register_loss(
    "triplet_margin_loss",
    broadcasts=("anchor", "positive", "negative"),
    aliases=("TripletMarginLoss", "triplet_margin"),
    inputs=(_ANCHOR, _POSITIVE, _NEGATIVE),
    params=(
        REDUCTION,
        _TRIPLET_MARGIN,
        Param("p", "float", 2.0, "The norm degree of the pairwise distance; inf: the max norm.", infinite=True),
        Param("eps", "float", 1e-6, "Small constant added to the differences for numerical stability."),
        _SWAP,
    ),
    description="Triplet margin loss: max(0, d(a, p) - d(a, n) + margin) with the p-norm distance.",
    source="torch.nn.functional.triplet_margin_loss",
    legacy_reduction=True,
    example=_triplet_example,
    domain=(_NORM_DEGREE, _DIFF_EPS),
    refuses=("margin <= 0 (torch's own error)", "shapes torch cannot match (torch's own error)"),
)
def triplet_margin_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    *,
    reduction: str,
    margin: float,
    p: float,
    eps: float,
    swap: bool,
) -> torch.Tensor:
    r"""``l_n = max(0, ||a_n - p_n + eps||_p - ||a_n - n_n + eps||_p + margin)``.

    Shapes: anchor, positive, negative ``(N, D)`` or ``(D)``; output scalar, or ``(N)`` / ``()``
    for ``reduction='none'``. ``p <= 0`` and ``eps < 0``: computed as torch does, with a warning.
    """
    _NORM_DEGREE.check(p > 0)
    _DIFF_EPS.check(eps >= 0)
    return F.triplet_margin_loss(anchor, positive, negative, margin=margin, p=p, eps=eps, swap=swap,
                                 reduction=reduction)


@register_loss(
    "triplet_margin_with_distance_loss",
    broadcasts=("anchor", "positive", "negative"),
    aliases=("TripletMarginWithDistanceLoss", "triplet_margin_with_distance"),
    inputs=(_ANCHOR, _POSITIVE, _NEGATIVE),
    params=(
        REDUCTION,
        Param(
            "distance_function",
            "string",
            "pairwise_distance",
            "Named distance: pairwise_distance (torch's default, p=2, eps=1e-6), cosine_distance "
            "(1 - cosine_similarity over the last dim), l1 (pairwise_distance with p=1), "
            "squared_euclidean (sum of squared differences over the last dim).",
            choices=tuple(DISTANCE_FUNCTIONS),
        ),
        _TRIPLET_MARGIN,
        _SWAP,
    ),
    description="Triplet margin loss with a named distance: max(0, d(a, p) - d(a, n) + margin).",
    source="torch.nn.functional.triplet_margin_with_distance_loss",
    notes="torch takes any callable as distance_function; lossd never runs client code, so it "
    "offers a fixed set of named distances implemented on the server.",
    example=_triplet_example,
    refuses=(
        "margin <= 0 (torch's own error)",
        "a distance other than the named ones (lossd never runs client code)",
        "shapes torch cannot match (torch's own error)",
    ),
)
def triplet_margin_with_distance_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    *,
    reduction: str,
    distance_function: str,
    margin: float,
    swap: bool,
) -> torch.Tensor:
    r"""``l_n = max(0, d(a_n, p_n) - d(a_n, n_n) + margin)``, ``d`` chosen by name.

    Shapes: anchor, positive, negative ``(N, D)`` or ``(D)``; output scalar, or ``(N)`` / ``()``
    for ``reduction='none'``.
    """
    return F.triplet_margin_with_distance_loss(
        anchor, positive, negative, distance_function=DISTANCE_FUNCTIONS[distance_function],
        margin=margin, swap=swap, reduction=reduction,
    )


# ---------------------------------------------------------------------------------------
# cosine_similarity and pairwise_distance (no reduction: the output is the tensor)


def _pair_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "x1": torch.tensor([1.0, 2.0, -0.5], dtype=dt),
        "x2": torch.tensor([0.5, 2.5, 0.5], dtype=dt),
    }


@register_loss(
    "cosine_similarity",
    broadcasts=("x1", "x2"),
    aliases=("CosineSimilarity",),
    inputs=(
        Input("x1", "first tensor", differentiable=True, aliases=("y_pred",), doc="any shape"),
        Input("x2", "second tensor", differentiable=True, aliases=("y_true",),
              doc="broadcastable to x1's shape"),
    ),
    params=(
        Param("dim", "int", 1, "Dimension along which the cosine similarity is computed."),
        Param("eps", "float", 1e-8, "Small value to avoid division by zero.", min=0.0),
    ),
    description="Cosine similarity along dim: x1 . x2 / max(||x1|| ||x2||, eps); not reduced.",
    source="torch.nn.functional.cosine_similarity",
    notes="Not a loss: the output is the similarity tensor (dim squeezed), not reduced; send "
    "grad_output for a vector-Jacobian product.",
    example=lambda dt: {**_pair_example(dt), "params": {"dim": 0}},
    refuses=("dim outside the inputs' dimensions, eps < 0, shapes that do not broadcast (torch's own errors)",),
)
def cosine_similarity(x1: torch.Tensor, x2: torch.Tensor, *, dim: int, eps: float) -> torch.Tensor:
    r"""``x1 . x2 / max(||x1||_2 * ||x2||_2, eps)`` along ``dim``.

    Shapes: x1 ``(*1, D, *2)``, x2 broadcastable to it; output ``(*1, *2)``.
    """
    nd = max(x1.dim(), x2.dim(), 1)
    require(-nd <= dim < nd, "params.dim", f"is {dim}; must be in [{-nd}, {nd - 1}] for {nd}-dimensional inputs")
    return F.cosine_similarity(x1, x2, dim=dim, eps=eps)


@register_loss(
    "pairwise_distance",
    broadcasts=("x1", "x2"),
    aliases=("PairwiseDistance",),
    inputs=(
        Input("x1", "first tensor", differentiable=True, aliases=("y_pred",), doc="(N, D) or (D)"),
        Input("x2", "second tensor", differentiable=True, aliases=("y_true",),
              doc="(N, D) or (D), broadcastable to x1"),
    ),
    params=(
        Param("p", "float", 2.0, "The norm degree; torch allows any real value, negative included, and "
              "inf (the max norm) or -inf (the min).", infinite=True),
        Param("eps", "float", 1e-6, "Small value added to the differences to avoid division by zero."),
        Param("keepdim", "bool", False, "Keep the vector dimension (size 1) in the output."),
    ),
    description="p-norm distance ||x1 - x2 + eps||_p over the last dimension; not reduced.",
    source="torch.nn.functional.pairwise_distance",
    notes="Not a loss: the output is the distance tensor, not reduced; send grad_output for a "
    "vector-Jacobian product.",
    example=_pair_example,
    domain=(_DIFF_EPS,),
    refuses=("shapes torch cannot match (torch's own error)",),
)
def pairwise_distance(x1: torch.Tensor, x2: torch.Tensor, *, p: float, eps: float, keepdim: bool) -> torch.Tensor:
    r"""``||x1 - x2 + eps||_p`` over the last dimension.

    Shapes: x1, x2 ``(N, D)`` or ``(D)``; output ``(N)`` or ``()`` (``(N, 1)`` / ``(1)`` with keepdim).
    """
    _DIFF_EPS.check(eps >= 0)
    return F.pairwise_distance(x1, x2, p=p, eps=eps, keepdim=keepdim)
