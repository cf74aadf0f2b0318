"""local_normalized_cross_correlation_loss: window statistics by explicit loops over window offsets."""

from __future__ import annotations

import itertools
import math

import torch

from support.parity import Case, Reference, rand


def _weights(k, kind):
    if kind == "rectangular":
        return [1.0] * k
    if kind == "gaussian":
        s = k / 3.0
        return [math.exp(-0.5 * x * x / (s * s)) for x in range(-(k // 2), k // 2 + 1)]
    f = (k + 1) // 2
    f -= 1 if f % 2 == 0 else 0
    box = [1.0 / f] * f
    full = [sum(box[i] * box[j - i] for i in range(f) if 0 <= j - i < f) for j in range(2 * f - 1)]
    pad = (k - (2 * f - 1)) // 2
    return [0.0] * pad + full + [0.0] * (k - len(full) - pad)


def lncc(t, p):
    x, y = t["input"], t["target"]
    k = p.get("kernel_size", 3)
    w1 = _weights(k, p.get("kernel_type", "rectangular"))
    d = x.dim() - 2
    h = k // 2
    pad = [h, h] * d
    px, py = torch.nn.functional.pad(x, pad), torch.nn.functional.pad(y, pad)
    sums = {key: torch.zeros_like(x) for key in ("t", "p", "tt", "pp", "tp")}
    for offset in itertools.product(range(k), repeat=d):
        w = math.prod(w1[o] for o in offset)
        index = (slice(None), slice(None), *[slice(o, o + x.shape[2 + i]) for i, o in enumerate(offset)])
        a, b = py[index], px[index]
        sums["t"] = sums["t"] + w * a
        sums["p"] = sums["p"] + w * b
        sums["tt"] = sums["tt"] + w * a * a
        sums["pp"] = sums["pp"] + w * b * b
        sums["tp"] = sums["tp"] + w * a * b
    vol = sum(w1) ** d
    cross = sums["tp"] - sums["p"] * sums["t"] / vol
    dr = p.get("smooth_dr", 1e-5)
    tv = torch.clamp(sums["tt"] - sums["t"] ** 2 / vol, min=dr)
    pv = torch.clamp(sums["pp"] - sums["p"] ** 2 / vol, min=dr)
    ncc = -(cross * cross + p.get("smooth_nr", 0.0)) / (tv * pv)
    red = p.get("reduction", "mean")
    return ncc.mean() if red == "mean" else (ncc.sum() if red == "sum" else ncc)


REFERENCES = {"local_normalized_cross_correlation_loss": Reference(lncc, None, exact=False)}

CASES = {
    "local_normalized_cross_correlation_loss": [
        Case("2d-rectangular", lambda dt: {"input": rand(2, 2, 5, 6, dtype=dt, seed=1), "target": rand(2, 2, 5, 6, dtype=dt, seed=2)}),
        Case("3d-gaussian", lambda dt: {"input": rand(1, 1, 4, 5, 4, dtype=dt, seed=3), "target": rand(1, 1, 4, 5, 4, dtype=dt, seed=4)},
             params={"kernel_size": 5, "kernel_type": "gaussian", "smooth_nr": 1e-3}),
        Case("1d-triangular", lambda dt: {"input": rand(2, 1, 9, dtype=dt, seed=5), "target": rand(2, 1, 9, dtype=dt, seed=6)},
             params={"kernel_size": 7, "kernel_type": "triangular"}),
    ],
}


def _gaussian_windows(img, bins, ratio):
    x = img.clamp(0, 1).reshape(img.shape[0], -1)
    centers = [k / (bins - 1) for k in range(bins)]
    sigma = ratio / (bins - 1)
    rows = []
    for b in range(x.shape[0]):
        w = torch.stack([torch.stack([torch.exp(-((v - c) ** 2) / (2 * sigma * sigma)) for c in centers]) for v in x[b]])
        rows.append(w / w.sum(1, keepdim=True))
    return torch.stack(rows)


def _spline_windows(img, bins, order):
    lo, hi = img.min(), img.max()
    size = (hi - lo) / (bins - 4)
    term = (img / size - (lo / size - 2)).clamp(2, bins - 3).reshape(img.shape[0], -1)
    rows = []
    for b in range(term.shape[0]):
        ws = []
        for v in term[b]:
            cells = []
            for k in range(bins):
                d = (k - v).abs()
                if order == 0:
                    cells.append(d * 0 + (1.0 if d < 0.5 else (0.5 if d == 0.5 else 0.0)))
                elif d < 1:
                    cells.append((4 - 6 * d ** 2 + 3 * d ** 3) / 6)
                elif d < 2:
                    cells.append((2 - d) ** 3 / 6)
                else:
                    cells.append(d * 0)
            w = torch.stack(cells)
            ws.append(w / w.sum())
        rows.append(torch.stack(ws))
    return torch.stack(rows)


def gmi(t, p):
    x, y = t["input"], t["target"]
    bins, kind = p.get("num_bins", 23), p.get("kernel_type", "gaussian")
    if kind == "gaussian":
        wa, wb = _gaussian_windows(x, bins, p.get("sigma_ratio", 0.5)), _gaussian_windows(y, bins, p.get("sigma_ratio", 0.5))
    else:
        wa, wb = _spline_windows(x, bins, 3), _spline_windows(y, bins, 0)
    nr, dr = p.get("smooth_nr", 1e-7), p.get("smooth_dr", 1e-7)
    out = []
    for b in range(x.shape[0]):
        pa, pb = wa[b].mean(0), wb[b].mean(0)
        pab = wa[b].T @ wb[b] / wa.shape[1]
        out.append(-(pab * torch.log((pab + nr) / (pa[:, None] * pb[None, :] + dr) + dr)).sum())
    loss = torch.stack(out)
    red = p.get("reduction", "mean")
    return loss.mean() if red == "mean" else (loss.sum() if red == "sum" else loss)


REFERENCES["global_mutual_information_loss"] = Reference(gmi, None, exact=False)
CASES["global_mutual_information_loss"] = [
    Case("gaussian", lambda dt: {"input": rand(2, 1, 3, 4, dtype=dt, seed=7), "target": rand(2, 1, 3, 4, dtype=dt, seed=8)},
         params={"num_bins": 8}),
    Case("b-spline", lambda dt: {"input": rand(2, 5, dtype=dt, seed=9), "target": rand(2, 5, dtype=dt, seed=10)},
         params={"kernel_type": "b-spline", "num_bins": 10}),
]
