"""Embedding and metric losses: references in local torch and test cases.

The named distance functions of ``triplet_margin_with_distance_loss`` are written out
here again, independently of the server's table, from their documented definitions.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from support.parity import Case, Reference, rand, randint, randn


def pm1(*shape: int, seed: int = 0) -> torch.Tensor:
    """int64 samples of 1 and -1."""
    return randint(2, *shape, seed=seed) * 2 - 1


DISTANCES = {
    "pairwise_distance": None,  # torch's default: torch.pairwise_distance
    "cosine_distance": lambda a, b: 1.0 - F.cosine_similarity(a, b, dim=-1),
    "l1": lambda a, b: F.pairwise_distance(a, b, p=1.0),
    "squared_euclidean": lambda a, b: (a - b).pow(2).sum(dim=-1),
}


def _with_distance(p):
    p = dict(p)
    p["distance_function"] = DISTANCES[p.get("distance_function", "pairwise_distance")]
    return p


def _triplet(t):
    return t["anchor"], t["positive"], t["negative"]


REFERENCES = {
    "hinge_embedding_loss": Reference(
        functional=lambda t, p: F.hinge_embedding_loss(t["input"], t["target"], **p),
        module=lambda t, p: nn.HingeEmbeddingLoss(**p)(t["input"], t["target"]),
    ),
    "cosine_embedding_loss": Reference(
        functional=lambda t, p: F.cosine_embedding_loss(t["input1"], t["input2"], t["target"], **p),
        module=lambda t, p: nn.CosineEmbeddingLoss(**p)(t["input1"], t["input2"], t["target"]),
    ),
    "margin_ranking_loss": Reference(
        functional=lambda t, p: F.margin_ranking_loss(t["input1"], t["input2"], t["target"], **p),
        module=lambda t, p: nn.MarginRankingLoss(**p)(t["input1"], t["input2"], t["target"]),
    ),
    "triplet_margin_loss": Reference(
        functional=lambda t, p: F.triplet_margin_loss(*_triplet(t), **p),
        module=lambda t, p: nn.TripletMarginLoss(**p)(*_triplet(t)),
    ),
    "triplet_margin_with_distance_loss": Reference(
        functional=lambda t, p: F.triplet_margin_with_distance_loss(*_triplet(t), **_with_distance(p)),
        module=lambda t, p: nn.TripletMarginWithDistanceLoss(**_with_distance(p))(*_triplet(t)),
    ),
    "cosine_similarity": Reference(
        functional=lambda t, p: F.cosine_similarity(t["x1"], t["x2"], **p),
        module=lambda t, p: nn.CosineSimilarity(**p)(t["x1"], t["x2"]),
    ),
    "pairwise_distance": Reference(
        functional=lambda t, p: F.pairwise_distance(t["x1"], t["x2"], **p),
        module=lambda t, p: nn.PairwiseDistance(**p)(t["x1"], t["x2"]),
    ),
}


def _triplet_tensors(*shape: int):
    return lambda dt: {"anchor": randn(*shape, dtype=dt), "positive": randn(*shape, dtype=dt, seed=1),
                       "negative": randn(*shape, dtype=dt, seed=2)}


CASES = {
    "hinge_embedding_loss": [
        Case("matrix", lambda dt: {"input": rand(4, 5, dtype=dt, high=2.0), "target": pm1(4, 5).to(dt)}),
        Case("margin-int-target", lambda dt: {"input": rand(3, 4, dtype=dt, high=3.0, seed=1), "target": pm1(3, 4, seed=1)},
             params={"margin": 2.5}),
        Case("broadcast-target", lambda dt: {"input": randn(4, 5, dtype=dt, seed=2), "target": pm1(5, seed=2).to(dt)},
             params={"margin": 0.5}),
        Case("scalar", lambda dt: {"input": torch.tensor(0.4, dtype=dt), "target": torch.tensor(-1.0, dtype=dt)}),
        Case("empty", lambda dt: {"input": randn(0, 3, dtype=dt), "target": torch.ones(0, 3, dtype=dt)},
             reductions=("none", "sum")),
    ],
    "cosine_embedding_loss": [
        Case("batched", lambda dt: {"input1": randn(5, 4, dtype=dt), "input2": randn(5, 4, dtype=dt, seed=1),
                                    "target": pm1(5, seed=2).to(dt)}),
        Case("margin-int-target", lambda dt: {"input1": randn(6, 3, dtype=dt, seed=3),
                                              "input2": randn(6, 3, dtype=dt, seed=4), "target": pm1(6, seed=5)},
             params={"margin": 0.3}),
        Case("negative-margin", lambda dt: {"input1": randn(4, 3, dtype=dt, seed=6),
                                            "input2": randn(4, 3, dtype=dt, seed=7),
                                            "target": torch.tensor([-1.0, -1.0, 1.0, -1.0], dtype=dt)},
             params={"margin": -0.5}),
        Case("unbatched", lambda dt: {"input1": randn(4, dtype=dt, seed=8), "input2": randn(4, dtype=dt, seed=9),
                                      "target": torch.tensor(-1.0, dtype=dt)}),
    ],
    "margin_ranking_loss": [
        Case("vector", lambda dt: {"input1": randn(6, dtype=dt), "input2": randn(6, dtype=dt, seed=1),
                                   "target": pm1(6, seed=2).to(dt)}),
        Case("margin-int-target", lambda dt: {"input1": randn(5, dtype=dt, seed=3), "input2": randn(5, dtype=dt, seed=4),
                                              "target": pm1(5, seed=5)}, params={"margin": 0.7}),
        Case("scalar", lambda dt: {"input1": torch.tensor(0.2, dtype=dt), "input2": torch.tensor(0.5, dtype=dt),
                                   "target": torch.tensor(1.0, dtype=dt)}, params={"margin": 0.1}),
    ],
    "triplet_margin_loss": [
        Case("batched", _triplet_tensors(4, 5)),
        Case("p1-swap-margin-eps", _triplet_tensors(5, 3), params={"p": 1.0, "swap": True, "margin": 0.5, "eps": 1e-3}),
        Case("p3-no-eps", _triplet_tensors(4, 6), params={"p": 3.0, "eps": 0.0, "margin": 2.0}),
        Case("unbatched", _triplet_tensors(5), params={"margin": 3.0}),
    ],
    "triplet_margin_with_distance_loss": [
        Case("default-distance", _triplet_tensors(4, 5)),
        Case("pairwise-swap", _triplet_tensors(5, 3),
             params={"distance_function": "pairwise_distance", "swap": True, "margin": 2.0}),
        Case("cosine-swap", _triplet_tensors(6, 4), params={"distance_function": "cosine_distance", "swap": True,
                                                            "margin": 0.5}),
        Case("l1-margin", _triplet_tensors(4, 3), params={"distance_function": "l1", "margin": 2.5}),
        Case("squared-euclidean-unbatched", _triplet_tensors(5),
             params={"distance_function": "squared_euclidean", "margin": 4.0}),
    ],
    "cosine_similarity": [
        Case("vectors", lambda dt: {"x1": randn(5, dtype=dt), "x2": randn(5, dtype=dt, seed=1)}, params={"dim": 0}),
        Case("matrix-default-dim", lambda dt: {"x1": randn(4, 5, dtype=dt, seed=2), "x2": randn(4, 5, dtype=dt, seed=3)}),
        Case("3d-last-dim-eps", lambda dt: {"x1": randn(2, 3, 4, dtype=dt, seed=4), "x2": randn(2, 3, 4, dtype=dt, seed=5)},
             params={"dim": -1, "eps": 1e-3}),
        Case("broadcast", lambda dt: {"x1": randn(4, 5, dtype=dt, seed=6), "x2": randn(1, 5, dtype=dt, seed=7)}),
        Case("zero-vector", lambda dt: {"x1": torch.zeros(2, 3, dtype=dt), "x2": randn(2, 3, dtype=dt, seed=8)},
             params={"eps": 0.5}),
    ],
    "pairwise_distance": [
        Case("vectors", lambda dt: {"x1": randn(5, dtype=dt), "x2": randn(5, dtype=dt, seed=1)}),
        Case("matrix", lambda dt: {"x1": randn(4, 5, dtype=dt, seed=2), "x2": randn(4, 5, dtype=dt, seed=3)}),
        Case("p1-keepdim", lambda dt: {"x1": randn(3, 4, dtype=dt, seed=4), "x2": randn(3, 4, dtype=dt, seed=5)},
             params={"p": 1.0, "keepdim": True}),
        Case("p-negative-eps", lambda dt: {"x1": randn(3, 4, dtype=dt, seed=6), "x2": randn(3, 4, dtype=dt, seed=7)},
             params={"p": -1.5, "eps": 1e-3}),
        Case("p3-broadcast", lambda dt: {"x1": randn(3, 4, dtype=dt, seed=8),
                                                           "x2": randn(4, dtype=dt, seed=9)},
             params={"p": 3.0, "eps": 0.0}),
        Case("unbatched-keepdim", lambda dt: {"x1": randn(4, dtype=dt, seed=10), "x2": randn(4, dtype=dt, seed=11)},
             params={"keepdim": True}),
    ],
}
