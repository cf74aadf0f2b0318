"""Classification losses: references in local torch and test cases."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from support.parity import Case, Reference, rand, randint, randn


def _ce_module(t, p):
    return nn.CrossEntropyLoss(weight=t.get("weight"), **p)(t["input"], t["target"])


REFERENCES = {
    "cross_entropy": Reference(
        functional=lambda t, p: F.cross_entropy(t["input"], t["target"], t.get("weight"), **p),
        module=_ce_module,
    ),
}

CASES = {
    "cross_entropy": [
        Case("seed", lambda dt: {"input": torch.tensor([[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]], dtype=dt),
                                 "target": torch.tensor([0, 2])}),
        Case("weight-ignore-smoothing",
             lambda dt: {"input": randn(6, 4, dtype=dt), "target": torch.tensor([0, 3, -100, 1, 2, 3]),
                         "weight": rand(4, dtype=dt, seed=2, low=0.5, high=2.0)},
             params={"ignore_index": -100, "label_smoothing": 0.1}),
        Case("probabilities", lambda dt: {"input": randn(3, 5, dtype=dt),
                                          "target": torch.softmax(randn(3, 5, dtype=torch.float64, seed=3), 1).to(dt)}),
        Case("k-dimensional", lambda dt: {"input": randn(2, 3, 4, 5, dtype=dt), "target": randint(3, 2, 4, 5)},
             params={"label_smoothing": 0.2}),
        Case("unbatched", lambda dt: {"input": randn(4, dtype=dt), "target": torch.tensor(2)}),
    ],
}
