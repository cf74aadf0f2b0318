"""boundary_loss: Kervadec et al. 2019 with MONAI's signed distance map, distances by brute force."""

from __future__ import annotations

import itertools
import math

import torch

from support.parity import Case, Reference, rand, randint, randn


def _signed(mask):
    """One (spatial) boolean mask: -(distance to the nearest outside pixel - 1) inside, distance to the
    nearest inside pixel outside, every pixel against every other; zeros if all in or all out."""
    if bool(mask.all()) or not bool(mask.any()):
        return torch.zeros(mask.shape, dtype=torch.float64)
    points = list(itertools.product(*[range(s) for s in mask.shape]))
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for q in points:
        other = [r for r in points if bool(mask[r]) != bool(mask[q])]
        d = min(math.dist(q, r) for r in other)
        out[q] = -(d - 1) if bool(mask[q]) else d
    return out


def boundary(t, p):
    x, y = t["input"], t["target"]
    act = p.get("activation", "none")
    probs = torch.sigmoid(x) if act == "sigmoid" else (torch.softmax(x, 1) if act == "softmax" else x)
    if not y.is_floating_point():
        y = torch.stack([(y == c) for c in range(x.shape[1])], 1).to(x.dtype)
    if not p.get("include_background", True):
        probs, y = probs[:, 1:], y[:, 1:]
    n, c = probs.shape[:2]
    loss = torch.stack([torch.stack([(probs[i, k] * _signed(y[i, k] > 0.5).to(x.dtype)).mean() for k in range(c)])
                        for i in range(n)])
    if p.get("batch"):
        loss = loss.mean(0)
    red = p.get("reduction", "mean")
    return loss.mean() if red == "mean" else (loss.sum() if red == "sum" else loss)


def _mask(*shape, dt, seed):
    return (rand(*shape, dtype=torch.float64, seed=seed) > 0.5).to(dt)


REFERENCES = {"boundary_loss": Reference(boundary, None, exact=False)}

CASES = {
    "boundary_loss": [
        Case("2d-probs", lambda dt: {"input": rand(2, 2, 4, 5, dtype=dt, seed=1), "target": _mask(2, 2, 4, 5, dt=dt, seed=2)}),
        Case("3d-softmax-indices-batch", lambda dt: {"input": randn(2, 3, 3, 4, 3, dtype=dt, seed=3),
                                                     "target": randint(3, 2, 3, 4, 3, seed=4)},
             params={"activation": "softmax", "include_background": False, "batch": True}),
        Case("sigmoid-empty-channel", lambda dt: {"input": randn(1, 2, 3, 3, dtype=dt, seed=5),
                                                  "target": torch.stack([_mask(1, 3, 3, dt=dt, seed=6),
                                                                         torch.zeros(1, 3, 3, dtype=dt)], 1)},
             params={"activation": "sigmoid"}),
    ],
}
