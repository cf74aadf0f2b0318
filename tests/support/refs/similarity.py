"""PSNR, total variation and (normalized) mutual information: independent references written from the
formulas (kornia's conventions), naively: explicit sums, no guards."""

from __future__ import annotations

import math

import torch

from support.parity import Case, Reference, rand, randn


def _red(loss, p, default="none"):
    red = p.get("reduction", default)
    return loss.mean() if red == "mean" else (loss.sum() if red == "sum" else loss)


def psnr(t, p):
    mse = ((t["input"] - t["target"]) ** 2).sum() / t["input"].numel()
    return -10 * torch.log10(p.get("max_val", 1.0) ** 2 / mse)


def total_variation(t, p):
    x = t["input"]
    dy, dx = (x[..., 1:, :] - x[..., :-1, :]).abs(), (x[..., :, 1:] - x[..., :, :-1]).abs()
    if p.get("pixels", "sum") == "mean":
        h, w = x.shape[-2:]
        tv = dy.sum((-1, -2)) / max((h - 1) * w, 1) + dx.sum((-1, -2)) / max(h * (w - 1), 1)
    else:
        tv = dy.sum((-1, -2)) + dx.sum((-1, -2))
    return _red(tv, p)


def _kernel(name, d, r):
    u = d.abs() / r
    if name == "xu":
        return torch.where(u < 0.5, 1 - 0.1 * u - 1.8 * u * u,
                           torch.where(u <= 1, 1.9 - 3.7 * u + 1.8 * u * u, torch.zeros_like(u)))
    if name == "truncated_gaussian":
        return torch.where(u <= 1, torch.exp(-0.5 * u * u) / (r * math.sqrt(2 * math.pi)), torch.zeros_like(u))
    return (u <= 1).to(d.dtype)


def _mi_terms(t, p):
    k = p.get("signal_dims", 1)
    bins, r, kern = p.get("num_bins", 64), p.get("window_radius", 1.0), p.get("kernel", "xu")
    x, y = t["input"], t["target"]
    lead = x.shape[: x.dim() - k]
    x, y = x.reshape(*lead, -1), y.reshape(*lead, -1)
    eps = torch.finfo(x.dtype).eps

    def positions(s):
        lo, hi = s.min(-1, keepdim=True).values, s.max(-1, keepdim=True).values
        return torch.where(hi - lo > eps, (s - lo) / (hi - lo) * (bins - 1), torch.zeros_like(s))

    px, py = positions(x), positions(y)
    centre = torch.arange(bins, dtype=x.dtype)
    wx = _kernel(kern, centre.view(-1, 1) - px.unsqueeze(-2), r)  # (*, bins, n)
    wy = _kernel(kern, centre.view(-1, 1) - py.unsqueeze(-2), r)
    joint = (wy.unsqueeze(-2) * wx.unsqueeze(-3)).sum(-1)  # (*, i: target bin, j: input bin)
    joint = torch.maximum(joint, torch.tensor(eps, dtype=x.dtype))
    joint = joint / joint.sum((-1, -2), keepdim=True)
    mx, my = joint.sum(-2), joint.sum(-1)

    def entropy(q, dims):
        return -(q * torch.log(q)).sum(dims)

    return entropy(mx, -1), entropy(my, -1), entropy(joint, (-1, -2))


def mutual_information(t, p):
    hx, hy, hxy = _mi_terms(t, p)
    return _red(hxy - hx - hy, p)


def normalized_mutual_information(t, p):
    hx, hy, hxy = _mi_terms(t, p)
    return _red(-(hx + hy) / hxy, p)


def _kl(p, q):
    """Σ p·log(p / q) per map, 0·log 0 = 0."""
    terms = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p)) / q), torch.zeros_like(p))
    return terms.sum((-1, -2))


def kl_2d(t, p):
    return _red(_kl(t["target"], t["input"]), p, "mean")


def js_2d(t, p):
    m = (t["input"] + t["target"]) / 2
    return _red(_kl(t["target"], m) / 2 + _kl(t["input"], m) / 2, p, "mean")


def depth_smoothness(t, p):
    d, img = t["input"], t["target"]
    dx, dy = d[..., :, :-1] - d[..., :, 1:], d[..., :-1, :] - d[..., 1:, :]
    wx = torch.exp(-(img[..., :, :-1] - img[..., :, 1:]).abs().mean(1, keepdim=True))
    wy = torch.exp(-(img[..., :-1, :] - img[..., 1:, :]).abs().mean(1, keepdim=True))
    return (dx * wx).abs().mean() + (dy * wy).abs().mean()


REFERENCES = {
    "kl_div_loss_2d": Reference(kl_2d, None, exact=False),
    "js_div_loss_2d": Reference(js_2d, None, exact=False),
    "inverse_depth_smoothness_loss": Reference(depth_smoothness, None, exact=False),
    "psnr_loss": Reference(psnr, None, exact=False),
    "total_variation_loss": Reference(total_variation, None, exact=False),
    "mutual_information_loss": Reference(mutual_information, None, exact=False),
    "normalized_mutual_information_loss": Reference(normalized_mutual_information, None, exact=False),
}

def _heatmaps(seed, dt, *shape):
    return torch.softmax(randn(*shape[:2], shape[2] * shape[3], dtype=torch.float64, seed=seed), -1).reshape(shape).to(dt)


CASES = {
    "kl_div_loss_2d": [
        Case("maps", lambda dt: {"input": _heatmaps(11, dt, 2, 2, 3, 3), "target": _heatmaps(12, dt, 2, 2, 3, 3)}),
    ],
    "js_div_loss_2d": [
        Case("maps", lambda dt: {"input": _heatmaps(13, dt, 1, 3, 2, 3), "target": _heatmaps(14, dt, 1, 3, 2, 3)}),
    ],
    "inverse_depth_smoothness_loss": [
        Case("rgb", lambda dt: {"input": rand(2, 1, 3, 4, dtype=dt, seed=15), "target": rand(2, 3, 3, 4, dtype=dt, seed=16)}),
    ],
    "psnr_loss": [
        Case("range-2", lambda dt: {"input": rand(2, 3, 4, dtype=dt, seed=1), "target": rand(2, 3, 4, dtype=dt, seed=2)},
             params={"max_val": 2.0}),
    ],
    "total_variation_loss": [
        Case("sum", lambda dt: {"input": rand(2, 3, 4, 5, dtype=dt, seed=3)}),
        Case("mean-one-row", lambda dt: {"input": rand(2, 1, 5, dtype=dt, seed=4)}, params={"pixels": "mean"}),
    ],
    "mutual_information_loss": [
        Case("flat", lambda dt: {"input": rand(3, 12, dtype=dt, seed=5), "target": rand(3, 12, dtype=dt, seed=6)},
             params={"num_bins": 8}),
        Case("images-gaussian", lambda dt: {"input": rand(2, 2, 3, 4, dtype=dt, seed=7),
                                            "target": rand(2, 2, 3, 4, dtype=dt, seed=8)},
             params={"signal_dims": 2, "num_bins": 6, "kernel": "truncated_gaussian", "window_radius": 1.5}),
    ],
    "normalized_mutual_information_loss": [
        Case("volumes", lambda dt: {"input": rand(2, 2, 3, 3, dtype=dt, seed=9), "target": rand(2, 2, 3, 3, dtype=dt, seed=10)},
             params={"signal_dims": 3, "num_bins": 10}),
    ],
}
