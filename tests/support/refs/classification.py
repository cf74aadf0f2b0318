"""Classification losses: references in local torch and test cases."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from support.parity import Case, Reference, rand, randint, randn

REFERENCES = {
    "cross_entropy": Reference(
        functional=lambda t, kw: F.cross_entropy(t["input"], t["target"], t.get("weight"), **kw),
        module=lambda t, kw: nn.CrossEntropyLoss(weight=t.get("weight"), **kw)(t["input"], t["target"]),
    ),
    "nll_loss": Reference(
        functional=lambda t, kw: F.nll_loss(t["input"], t["target"], t.get("weight"), **kw),
        module=lambda t, kw: nn.NLLLoss(weight=t.get("weight"), **kw)(t["input"], t["target"]),
    ),
    "binary_cross_entropy": Reference(
        functional=lambda t, kw: F.binary_cross_entropy(t["input"], t["target"], t.get("weight"), **kw),
        module=lambda t, kw: nn.BCELoss(weight=t.get("weight"), **kw)(t["input"], t["target"]),
    ),
    "binary_cross_entropy_with_logits": Reference(
        functional=lambda t, kw: F.binary_cross_entropy_with_logits(
            t["input"], t["target"], t.get("weight"), pos_weight=t.get("pos_weight"), **kw),
        module=lambda t, kw: nn.BCEWithLogitsLoss(weight=t.get("weight"), pos_weight=t.get("pos_weight"), **kw)(
            t["input"], t["target"]),
    ),
    "kl_div": Reference(
        functional=lambda t, kw: F.kl_div(t["input"], t["target"], **kw),
        module=lambda t, kw: nn.KLDivLoss(**kw)(t["input"], t["target"]),
    ),
    "multilabel_soft_margin_loss": Reference(
        functional=lambda t, kw: F.multilabel_soft_margin_loss(t["input"], t["target"], t.get("weight"), **kw),
        module=lambda t, kw: nn.MultiLabelSoftMarginLoss(weight=t.get("weight"), **kw)(t["input"], t["target"]),
    ),
    "multilabel_margin_loss": Reference(
        functional=lambda t, kw: F.multilabel_margin_loss(t["input"], t["target"], **kw),
        module=lambda t, kw: nn.MultiLabelMarginLoss(**kw)(t["input"], t["target"]),
    ),
    "multi_margin_loss": Reference(
        functional=lambda t, kw: F.multi_margin_loss(t["input"], t["target"], weight=t.get("weight"), **kw),
        module=lambda t, kw: nn.MultiMarginLoss(weight=t.get("weight"), **kw)(t["input"], t["target"]),
    ),
    "soft_margin_loss": Reference(
        functional=lambda t, kw: F.soft_margin_loss(t["input"], t["target"], **kw),
        module=lambda t, kw: nn.SoftMarginLoss(**kw)(t["input"], t["target"]),
    ),
}


def _probs(*shape: int, dtype: torch.dtype, seed: int, dim: int = -1) -> torch.Tensor:
    return torch.softmax(randn(*shape, dtype=torch.float64, seed=seed), dim).to(dtype)


def _log_probs(*shape: int, dtype: torch.dtype, seed: int = 0, dim: int = -1) -> torch.Tensor:
    return torch.log_softmax(randn(*shape, dtype=torch.float64, seed=seed), dim).to(dtype)


def _weight(c: int, dtype: torch.dtype) -> torch.Tensor:
    return rand(c, dtype=dtype, seed=2, low=0.5, high=2.0)


def _labels(*shape: int, seed: int = 1) -> torch.Tensor:
    return randint(2, *shape, seed=seed)


def _signs(*shape: int, dtype: torch.dtype, seed: int = 1) -> torch.Tensor:
    return (2 * randint(2, *shape, seed=seed) - 1).to(dtype)


CASES = {
    "cross_entropy": [
        Case("seed", lambda dt: {"input": torch.tensor([[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]], dtype=dt),
                                 "target": torch.tensor([0, 2])}),
        Case("weight-ignore-smoothing",
             lambda dt: {"input": randn(6, 4, dtype=dt), "target": torch.tensor([0, 3, -100, 1, 2, 3]),
                         "weight": _weight(4, dt)},
             params={"ignore_index": -100, "label_smoothing": 0.1}),
        Case("probabilities", lambda dt: {"input": randn(3, 5, dtype=dt), "target": _probs(3, 5, dtype=dt, seed=3)}),
        Case("probabilities-weight-smoothing",
             lambda dt: {"input": randn(4, 5, dtype=dt), "target": _probs(4, 5, dtype=dt, seed=3),
                         "weight": _weight(5, dt)},
             params={"label_smoothing": 0.15}),
        Case("k-dimensional", lambda dt: {"input": randn(2, 3, 4, 5, dtype=dt), "target": randint(3, 2, 4, 5)},
             params={"label_smoothing": 0.2}),
        Case("k-dimensional-weight-ignore-in-range",
             lambda dt: {"input": randn(2, 4, 3, 2, dtype=dt), "target": randint(4, 2, 3, 2, seed=5),
                         "weight": _weight(4, dt)},
             params={"ignore_index": 1}),
        Case("k-dimensional-probabilities",
             lambda dt: {"input": randn(2, 3, 4, dtype=dt), "target": _probs(2, 3, 4, dtype=dt, seed=6, dim=1)}),
        Case("unbatched", lambda dt: {"input": randn(4, dtype=dt), "target": torch.tensor(2)}),
        Case("unbatched-probabilities", lambda dt: {"input": randn(4, dtype=dt), "target": _probs(4, dtype=dt, seed=7)},
             params={"label_smoothing": 0.3}),
    ],
    "nll_loss": [
        Case("batch", lambda dt: {"input": _log_probs(5, 4, dtype=dt), "target": randint(4, 5, seed=1)}),
        Case("weight-ignore", lambda dt: {"input": _log_probs(6, 4, dtype=dt),
                                          "target": torch.tensor([0, 3, 7, 1, 2, 7]), "weight": _weight(4, dt)},
             params={"ignore_index": 7}),
        Case("k-dimensional-weight", lambda dt: {"input": _log_probs(2, 3, 4, 2, dtype=dt, dim=1),
                                                 "target": randint(3, 2, 4, 2, seed=1), "weight": _weight(3, dt)}),
        Case("unbatched", lambda dt: {"input": _log_probs(4, dtype=dt), "target": torch.tensor(3)}),
        Case("all-ignored", lambda dt: {"input": _log_probs(3, 4, dtype=dt), "target": torch.tensor([-100] * 3)},
             reductions=("none", "sum")),  # 'mean' is 0/0 = NaN, which the harness's value check cannot compare
    ],
    "binary_cross_entropy": [
        Case("probabilities", lambda dt: {"input": rand(4, 3, dtype=dt, low=0.05, high=0.95),
                                          "target": rand(4, 3, dtype=dt, seed=1)}),
        Case("labels-weight-per-class", lambda dt: {"input": rand(4, 3, dtype=dt, low=0.05, high=0.95),
                                                    "target": _labels(4, 3).to(dt), "weight": _weight(3, dt)}),
        Case("weight-full", lambda dt: {"input": rand(5, dtype=dt, low=0.05, high=0.95),
                                        "target": rand(5, dtype=dt, seed=1),
                                        "weight": rand(5, dtype=dt, seed=2, low=0.5, high=2.0)}),
        Case("saturated", lambda dt: {"input": torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5], dtype=dt),
                                      "target": torch.tensor([0.0, 1.0, 1.0, 0.0, 0.5], dtype=dt)}),
    ],
    "binary_cross_entropy_with_logits": [
        Case("labels", lambda dt: {"input": randn(4, 3, dtype=dt), "target": _labels(4, 3).to(dt)}),
        Case("weight-pos-weight", lambda dt: {"input": randn(4, 3, dtype=dt), "target": rand(4, 3, dtype=dt, seed=1),
                                              "weight": rand(4, 1, dtype=dt, seed=2, low=0.5, high=2.0),
                                              "pos_weight": rand(3, dtype=dt, seed=3, low=0.5, high=3.0)}),
        Case("pos-weight-k-dimensional", lambda dt: {"input": 3 * randn(2, 3, 4, dtype=dt),
                                                     "target": _labels(2, 3, 4).to(dt),
                                                     "pos_weight": rand(4, dtype=dt, seed=3, low=0.5, high=3.0)}),
        Case("scalar", lambda dt: {"input": randn(dtype=dt), "target": torch.tensor(1.0, dtype=dt)}),
    ],
    "kl_div": [
        Case("probabilities", lambda dt: {"input": _log_probs(3, 5, dtype=dt), "target": _probs(3, 5, dtype=dt, seed=1)}),
        Case("log-target", lambda dt: {"input": _log_probs(3, 5, dtype=dt), "target": _log_probs(3, 5, dtype=dt, seed=1)},
             params={"log_target": True}),
        Case("zero-probabilities", lambda dt: {"input": _log_probs(2, 3, dtype=dt),
                                               "target": torch.tensor([[0.0, 0.25, 0.75], [1.0, 0.0, 0.0]], dtype=dt)}),
        Case("unbatched", lambda dt: {"input": _log_probs(4, dtype=dt), "target": _probs(4, dtype=dt, seed=1)}),
    ],
    "multilabel_soft_margin_loss": [
        Case("labels", lambda dt: {"input": randn(4, 5, dtype=dt), "target": _labels(4, 5).to(dt)}),
        Case("weight-soft-labels", lambda dt: {"input": randn(4, 5, dtype=dt), "target": rand(4, 5, dtype=dt, seed=1),
                                               "weight": _weight(5, dt)}),
        Case("int-labels", lambda dt: {"input": randn(3, 4, dtype=dt), "target": _labels(3, 4)}),
    ],
    "multilabel_margin_loss": [
        Case("batch", lambda dt: {"input": randn(3, 4, dtype=dt),
                                  "target": torch.tensor([[3, 0, -1, 1], [1, 2, 3, -1], [0, 1, 2, 3]])}),
        Case("no-labels-row", lambda dt: {"input": randn(2, 4, dtype=dt),
                                          "target": torch.tensor([[-1, 0, 1, 2], [2, -1, -1, -1]])}),
        Case("unbatched", lambda dt: {"input": randn(5, dtype=dt), "target": torch.tensor([4, 1, -1, 0, 0])}),
        Case("empty", lambda dt: {"input": randn(0, 3, dtype=dt), "target": torch.zeros(0, 3, dtype=torch.int64)},
             reductions=("none",)),
    ],
    "multi_margin_loss": [
        Case("batch", lambda dt: {"input": randn(5, 4, dtype=dt), "target": randint(4, 5, seed=1)}),
        Case("p2-margin-weight", lambda dt: {"input": randn(5, 4, dtype=dt), "target": randint(4, 5, seed=1),
                                             "weight": _weight(4, dt)},
             params={"p": 2, "margin": 0.5}),
        Case("large-margin", lambda dt: {"input": randn(3, 3, dtype=dt), "target": randint(3, 3, seed=2)},
             params={"margin": 3.0}),
        Case("unbatched", lambda dt: {"input": randn(4, dtype=dt), "target": torch.tensor(1)}),
        Case("empty", lambda dt: {"input": randn(0, 3, dtype=dt), "target": torch.zeros(0, dtype=torch.int64)},
             reductions=("none",)),
    ],
    "soft_margin_loss": [
        Case("matrix", lambda dt: {"input": randn(4, 3, dtype=dt), "target": _signs(4, 3, dtype=dt)}),
        Case("int-targets", lambda dt: {"input": randn(6, dtype=dt), "target": _signs(6, dtype=torch.int64)}),
        Case("scalar", lambda dt: {"input": randn(dtype=dt), "target": torch.tensor(-1.0, dtype=dt)}),
    ],
}
