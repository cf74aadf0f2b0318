"""Bi-tempered logistic loss and balanced BCE: references written from pytorch-toolbelt's formulas
(``refs/libraries.py`` holds them; the loss here adds the reduction and the binary form)."""

from __future__ import annotations

import torch

from support.parity import Case, Reference, rand, randint, randn
from support.refs.libraries import toolbelt_balanced_bce, toolbelt_bi_tempered


def bi_tempered(t, p):
    x, y = t["input"], t["target"]
    t1, t2, s, iters = p.get("t1", 1.0), p.get("t2", 1.0), p.get("label_smoothing", 0.0), p.get("num_iters", 5)
    ignore = p.get("ignore_index")
    if p.get("mode") == "binary":
        x, y = torch.cat([-x, x], 1), torch.cat([1 - y, y], 1)
    keep = None
    if not y.is_floating_point() and ignore is not None:
        keep = y != ignore
        y = torch.where(keep, y, torch.zeros_like(y))
    loss = toolbelt_bi_tempered(x.movedim(1, -1), y if not y.is_floating_point() else y.movedim(1, -1),
                                t1=t1, t2=t2, smoothing=s, iters=iters)
    if keep is not None:
        loss = loss * keep
    if p.get("mode") == "binary":
        loss = loss.unsqueeze(1)
    red = p.get("reduction", "mean")
    return loss.mean() if red == "mean" else (loss.sum() if red == "sum" else loss)


def balanced_bce(t, p):
    red = p.get("reduction", "mean")
    if red == "none":
        x, y, g = t["input"], t["target"], p.get("gamma", 1.0)
        pos, neg = (y == 1).sum().to(x.dtype), (y == 0).sum().to(x.dtype)
        w = (neg / (pos + neg + 1e-7)) ** g
        loss = -((w ** g) * y * torch.log(torch.sigmoid(x)) + ((1 - w) ** g) * (1 - y) * torch.log(1 - torch.sigmoid(x)))
        return loss if p.get("ignore_index") is None else loss * (y != p["ignore_index"])
    return toolbelt_balanced_bce(t["input"], t["target"], gamma=p.get("gamma", 1.0), ignore_index=p.get("ignore_index"),
                                 reduction=red)


REFERENCES = {
    "bi_tempered_logistic_loss": Reference(bi_tempered, None, exact=False),
    "balanced_binary_cross_entropy_with_logits": Reference(balanced_bce, None, exact=False),
}

CASES = {
    "bi_tempered_logistic_loss": [
        Case("heavy-tail-converged", lambda dt: {"input": randn(4, 3, dtype=dt, seed=1), "target": randint(3, 4, seed=2)},
             params={"t1": 0.8, "t2": 1.4, "num_iters": 100, "label_smoothing": 0.1}),
        Case("finite-support-converged", lambda dt: {"input": randn(2, 3, 2, dtype=dt, seed=3),
                                                     "target": torch.tensor([[0, -1], [2, 1]])},
             params={"t1": 0.5, "t2": 0.8, "num_iters": 100, "ignore_index": -1}),
        Case("soft-targets", lambda dt: {"input": randn(3, 4, dtype=dt, seed=4),
                                         "target": torch.softmax(randn(3, 4, dtype=torch.float64, seed=5), 1).to(dt)},
             params={"t1": 0.7, "t2": 1.0}),
        Case("binary", lambda dt: {"input": randn(3, 1, 2, dtype=dt, seed=6), "target": rand(3, 1, 2, dtype=dt, seed=7)},
             params={"t1": 0.9, "t2": 1.2, "mode": "binary", "num_iters": 100}),
    ],
    "balanced_binary_cross_entropy_with_logits": [
        Case("defaults", lambda dt: {"input": randn(3, 4, dtype=dt, seed=8),
                                     "target": (rand(3, 4, dtype=torch.float64, seed=9) > 0.6).to(dt)}),
        Case("gamma-ignore", lambda dt: {"input": randn(2, 4, dtype=dt, seed=10),
                                         "target": torch.tensor([[1.0, 0, -1, 0], [0, -1, 1, 1]], dtype=dt)},
             params={"gamma": 0.5, "ignore_index": -1}),
    ],
}
