"""nacl_loss: cross-entropy from log-probabilities, the neighbourhood proportions by an explicit window sum."""

from __future__ import annotations

import itertools
import math

import torch

from support.parity import Case, Reference, randint, randn


def _window_mean(onehot, k):
    """Mean over the k^d window around each pixel, zeros outside ('same' size: torch pads (k-1)//2 before)."""
    d = onehot.dim() - 2
    before, after = (k - 1) // 2, k - 1 - (k - 1) // 2
    padded = torch.nn.functional.pad(onehot, [before, after] * d)
    out = torch.zeros_like(onehot)
    for offset in itertools.product(range(k), repeat=d):
        index = [slice(None), slice(None)] + [slice(o, o + onehot.shape[2 + i]) for i, o in enumerate(offset)]
        out = out + padded[tuple(index)]
    return out / k**d


def _gaussian(onehot, sigma):
    tail = int(max(sigma * 4.0, 0.5) + 0.5)
    r = 0.70710678 / sigma  # MONAI's constant for 1/sqrt(2)
    taps = [0.5 * (math.erf(r * (x + 0.5)) - math.erf(r * (x - 0.5))) for x in range(-tail, tail + 1)]
    d = onehot.dim() - 2
    padded = torch.nn.functional.pad(onehot, [tail, tail] * d)
    out = torch.zeros_like(onehot)
    for offset in itertools.product(range(2 * tail + 1), repeat=d):
        w = math.prod(taps[o] for o in offset)
        index = [slice(None), slice(None)] + [slice(o, o + onehot.shape[2 + i]) for i, o in enumerate(offset)]
        out = out + w * padded[tuple(index)]
    return out


def nacl(t, p):
    x, y = t["input"], t["target"]
    c = x.shape[1]
    logp = torch.log(torch.softmax(x, 1))
    onehot = torch.stack([(y == k) for k in range(c)], 1).to(x.dtype)
    ce = -(logp * onehot).sum(1).mean()
    if p.get("kernel_ops", "mean") == "mean":
        smooth = _window_mean(onehot, p.get("kernel_size", 3))
    else:
        smooth = _gaussian(onehot, p.get("sigma", 1.0))
    gap = smooth - x
    penalty = gap.abs().mean() if p.get("distance_type", "l1") == "l1" else (gap * gap).mean()
    return ce + p.get("alpha", 0.1) * penalty


REFERENCES = {"nacl_loss": Reference(nacl, None, exact=False)}

CASES = {
    "nacl_loss": [
        Case("2d-mean", lambda dt: {"input": randn(2, 3, 4, 5, dtype=dt, seed=1), "target": randint(3, 2, 4, 5, seed=2)}),
        Case("3d-gaussian-l2", lambda dt: {"input": randn(1, 2, 3, 4, 5, dtype=dt, seed=3), "target": randint(2, 1, 3, 4, 5, seed=4)},
             params={"kernel_ops": "gaussian", "distance_type": "l2", "alpha": 0.5, "sigma": 0.6}),
        Case("2d-even-kernel", lambda dt: {"input": randn(2, 2, 5, 4, dtype=dt, seed=5), "target": randint(2, 2, 5, 4, seed=6)},
             params={"kernel_size": 4, "alpha": 1.0}),
    ],
}
