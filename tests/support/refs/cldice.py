"""soft_cldice_loss and soft_dice_cldice_loss: Shit et al. 2021, with erosion and dilation written as
minima and maxima of shifted copies (not max pooling), MONAI's reductions."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from support.parity import Case, Reference, rand, randint, randn


def _shifted(img, offsets, fill):
    """The copy of img shifted by offsets (one per spatial dim), fill outside."""
    d = img.dim() - 2
    padded = F.pad(img, [1] * (2 * d), value=fill)
    index = [slice(None), slice(None)] + [slice(1 + o, 1 + o + img.shape[2 + k]) for k, o in enumerate(offsets)]
    return padded[tuple(index)]


def _erode(img):
    d = img.dim() - 2
    per_axis = []
    for k in range(d):
        shifts = [_shifted(img, [o if j == k else 0 for j in range(d)], float("inf")) for o in (-1, 0, 1)]
        per_axis.append(torch.stack(shifts).amin(0))
    out = per_axis[0]
    for p in per_axis[1:]:
        out = torch.min(out, p)
    return out


def _dilate(img):
    d = img.dim() - 2
    shifts = [_shifted(img, list(o), float("-inf")) for o in itertools.product((-1, 0, 1), repeat=d)]
    return torch.stack(shifts).amax(0)


def skeleton(img, iterations):
    skel = torch.relu(img - _dilate(_erode(img)))
    for _ in range(iterations):
        img = _erode(img)
        delta = torch.relu(img - _dilate(_erode(img)))
        skel = skel + torch.relu(delta - skel * delta)
    return skel


def _inputs(t, p):
    x, y = t["input"], t["target"]
    act = p.get("activation", "none")
    probs = torch.sigmoid(x) if act == "sigmoid" else (torch.softmax(x, 1) if act == "softmax" else x)
    if not y.is_floating_point():
        y = torch.stack([(y == c) for c in range(x.shape[1])], 1)
    y = y.to(x.dtype)
    if not p.get("include_background", True):
        probs, y = probs[:, 1:], y[:, 1:]
    return probs, y


def _cl(probs, y, p):
    it, nr, dr, sm = p.get("iter_", 3), p.get("smooth_nr", 1.0), p.get("smooth_dr", 1.0), p.get("smooth", 1e-4)
    sp, st = skeleton(probs, it), skeleton(y, it)
    dims = list(range(1, probs.dim()))
    tprec = ((sp * y).sum(dims) + nr) / (sp.sum(dims) + dr)
    tsens = ((st * probs).sum(dims) + nr) / (st.sum(dims) + dr)
    return 1 - 2 * tprec * tsens / (tprec + tsens + sm)


def cldice(t, p):
    loss = _cl(*_inputs(t, p), p)
    red = p.get("reduction", "mean")
    return loss.mean() if red == "mean" else (loss.sum() if red == "sum" else loss)


def dice_cldice(t, p):
    probs, y = _inputs(t, p)
    nr, dr, a = p.get("smooth_nr", 1.0), p.get("smooth_dr", 1.0), p.get("alpha", 0.5)
    dims = list(range(2, probs.dim()))
    dice = 1 - (2 * (probs * y).sum(dims) + nr) / (probs.sum(dims) + y.sum(dims) + dr)
    cl = _cl(probs, y, p)
    if p.get("reduction", "mean") == "sum":
        return (1 - a) * dice.sum() + a * cl.sum()
    return (1 - a) * dice.mean() + a * cl.mean()


def _distinct(*shape, dt, seed):
    """Probabilities k/256, all different and exact in every float dtype (bfloat16 too): no pooling ties, whose
    gradient max pooling and these minima split differently."""
    n = 1
    for s in shape:
        n *= s
    assert n < 256
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return ((order + 1).to(torch.float64) / 256).reshape(shape).to(dt)


def _mask(*shape, dt, seed):
    return (rand(*shape, dtype=torch.float64, seed=seed) > 0.4).to(dt)


REFERENCES = {
    "soft_cldice_loss": Reference(cldice, None, exact=False),
    "soft_dice_cldice_loss": Reference(dice_cldice, None, exact=False),
}

_CASES = [
    Case("2d-probs", lambda dt: {"input": _distinct(2, 2, 6, 7, dt=dt, seed=1),
                                 "target": _mask(2, 2, 6, 7, dt=dt, seed=2)}),
    Case("3d-softmax-indices", lambda dt: {"input": randn(2, 3, 4, 5, 4, dtype=dt, seed=3),
                                           "target": randint(3, 2, 4, 5, 4, seed=4)},
         params={"iter_": 2, "activation": "softmax", "include_background": False}),
    Case("2d-sigmoid-iter0", lambda dt: {"input": randn(1, 1, 5, 5, dtype=dt, seed=5), "target": _mask(1, 1, 5, 5, dt=dt, seed=6)},
         params={"iter_": 0, "activation": "sigmoid", "smooth_nr": 0.5, "smooth_dr": 0.5, "smooth": 1e-3}),
]

CASES = {"soft_cldice_loss": list(_CASES),
         "soft_dice_cldice_loss": [*_CASES, Case("alpha", lambda dt: {"input": randn(2, 2, 5, 6, dtype=dt, seed=7),
                                                                      "target": _mask(2, 2, 5, 6, dt=dt, seed=8)},
                                                 params={"alpha": 0.3, "iter_": 5, "activation": "sigmoid"})]}
