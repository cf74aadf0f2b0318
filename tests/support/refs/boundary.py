"""The boundary loss: an independent reference (signed distances by brute force over all pixel pairs)."""

from __future__ import annotations

import itertools
import math

import torch

from support.parity import Case, Reference, rand, randint, randn


def _signed(mask):
    """Kervadec's one_hot2dist for one class: outside, distance to the region; inside, 1 - distance to the outside."""
    points = list(itertools.product(*[range(s) for s in mask.shape]))
    out = torch.zeros(mask.shape, dtype=torch.float64)
    if bool(mask.all()) or not bool(mask.any()):
        return out
    for a in points:
        d = min(math.dist(a, b) for b in points if mask[b] != mask[a])
        out[a] = 1 - d if mask[a] else d
    return out


def boundary(t, p):
    x, y = t["input"], t["target"]
    probs = x
    if p.get("from_logits", False):
        probs = torch.softmax(x, 1) if p.get("mode") == "multiclass" else torch.sigmoid(x)
    if not y.is_floating_point():
        y = torch.stack([(y == c) for c in range(x.shape[1])], 1)
    y = y.to(x.dtype)
    n, c = x.shape[:2]
    if t.get("distance") is not None:
        dist = t["distance"]
    else:
        dist = torch.stack([torch.stack([_signed(y[i, k] > 0.5) for k in range(c)]) for i in range(n)]).to(x.dtype)
    if not p.get("include_background", True):
        probs, dist = probs[:, 1:], dist[:, 1:]
    per = (probs * dist).reshape(probs.shape[0], probs.shape[1], -1)
    loss = per.mean(2) if p.get("aggregation", "per_sample") == "per_sample" else per.mean(2).mean(0)
    red = p.get("reduction", "mean")
    return loss.mean() if red == "mean" else (loss.sum() if red == "sum" else loss)


REFERENCES = {"boundary_loss": Reference(boundary, None, exact=False)}

CASES = {
    "boundary_loss": [
        Case("multilabel", lambda dt: {"input": rand(2, 2, 4, 3, dtype=dt, seed=1),
                                       "target": (rand(2, 2, 4, 3, dtype=torch.float64, seed=2) > 0.5).to(dt)}),
        Case("multiclass-pooled", lambda dt: {"input": randn(1, 3, 3, 4, dtype=dt, seed=3),
                                              "target": randint(3, 1, 3, 4, seed=4)},
             params={"mode": "multiclass", "from_logits": True, "aggregation": "pooled", "include_background": False}),
        Case("given-distance", lambda dt: {"input": rand(2, 1, 5, dtype=dt, seed=5), "target": (rand(2, 1, 5, dtype=torch.float64, seed=6) > 0.5).to(dt),
                                           "distance": randn(2, 1, 5, dtype=dt, seed=7)},
             params={"mode": "binary"}),
    ],
}
