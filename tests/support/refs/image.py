"""SSIM, MS-SSIM and the distance-transform Hausdorff loss: independent references
(a full 2-D Gaussian window; distances by brute force over all pixel pairs)."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from support.parity import Case, Reference, rand, randint


def _window(size, sigma, dt, dims):
    r = [math.exp(-((i - (size - 1) / 2) ** 2) / (2 * sigma * sigma)) for i in range(size)]
    w = torch.tensor(r, dtype=dt)
    full = w
    for _ in range(dims - 1):
        full = full.unsqueeze(-1) * w
    return full / full.sum()


def _ssim(x, y, p, padding, eps):
    size, sigma, L = p.get("window_size", 11), p.get("sigma", 1.5), p.get("max_val", 1.0)
    c1, c2 = (p.get("k1", 0.01) * L) ** 2, (p.get("k2", 0.03) * L) ** 2
    ch, dims = x.shape[1], x.dim() - 2
    w = _window(size, sigma, x.dtype, dims).expand(ch, 1, *([size] * dims))
    conv = F.conv2d if dims == 2 else F.conv3d

    def filt(z):
        if padding == "same":
            z = F.pad(z, [size // 2] * (2 * dims), mode="reflect")
        return conv(z, w, groups=ch)

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
    ssim = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2) + eps)
    return ssim, (2 * cxy + c2) / (vx + vy + c2)


def _red(loss, p):
    red = p.get("reduction", "mean")
    return loss.mean() if red == "mean" else (loss.sum() if red == "sum" else loss)


def ssim(t, p):
    s, _ = _ssim(t["input"], t["target"], p, p.get("padding", "same"), p.get("eps", 1e-12))
    loss = torch.clamp((1 - s) / 2, 0, 1) if p.get("form", "half") == "half" else 1 - s
    return _red(loss, p)


def ms_ssim(t, p):
    weights = p.get("weights", [0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    x, y = t["input"], t["target"]
    value = 1
    for j, w in enumerate(weights):
        s, cs = _ssim(x, y, p, "valid", 0.0)
        m = (s if j == len(weights) - 1 else cs).mean(dim=(2, 3))
        value = value * torch.relu(m) ** w
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return _red(1 - value, p)


def _field(mask):
    """Brute force: each pixel's distance to the nearest pixel of the other kind (0 if none)."""
    shape = mask.shape
    points = list(itertools.product(*[range(s) for s in shape]))
    out = torch.zeros(shape, dtype=torch.float64)
    if bool(mask.all()) or not bool(mask.any()):
        return out
    for a in points:
        out[a] = min(math.dist(a, b) for b in points if mask[b] != mask[a])
    return out


def hausdorff(t, p):
    x, y = t["input"], t["target"]
    probs = x
    if p.get("from_logits", False):
        probs = torch.softmax(x, 1) if p.get("mode") == "multiclass" else torch.sigmoid(x)
    if not y.is_floating_point():
        y = torch.stack([(y == c) for c in range(x.shape[1])], 1)
    y = y.to(x.dtype)
    if not p.get("include_background", True):
        probs, y = probs[:, 1:], y[:, 1:]
    alpha = p.get("alpha", 2.0)
    n, c = probs.shape[:2]
    dist = torch.zeros_like(probs)
    for i in range(n):
        for k in range(c):
            dist[i, k] = (_field(probs[i, k].detach() > 0.5) ** alpha + _field(y[i, k] > 0.5) ** alpha).to(x.dtype)
    per = ((probs - y) ** 2 * dist).reshape(n, c, -1)
    loss = per.mean(2) if p.get("aggregation", "per_sample") == "per_sample" else per.transpose(0, 1).reshape(c, -1).mean(1)
    loss = _red(loss, p)
    return torch.log(loss + 1) if p.get("log") else loss


def _neighbours_mean(b):
    """Each pixel plus its face neighbours (zero outside), weighted 1/(2·dims + 1)."""
    dims = b.dim() - 2
    total = b.clone()
    for axis in range(2, b.dim()):
        for step in (1, -1):
            shifted = torch.roll(b, step, axis)
            edge = [slice(None)] * b.dim()
            edge[axis] = 0 if step == 1 else -1
            shifted[tuple(edge)] = 0
            total = total + shifted
    return total / (2 * dims + 1)


def hausdorff_er(t, p):
    x, y = t["input"], t["target"]
    if y.dim() == x.dim():
        y = y[:, 0]
    alpha, k = p.get("alpha", 2.0), p.get("k", 10)
    channels = []
    for c in range(x.shape[1]):
        b = (x[:, c:c + 1] - (y == c).unsqueeze(1).to(x.dtype)) ** 2
        out = torch.zeros_like(b)
        for i in range(k):
            d = _neighbours_mean(b)
            e = torch.where(d < 0.5, torch.zeros_like(d), d - 0.5)
            flat = e.reshape(e.shape[0], -1)
            lo, hi = flat.min(1).values, flat.max(1).values
            shape = [-1] + [1] * (e.dim() - 1)
            e = torch.where((hi - lo).view(shape) != 0, (e - lo.view(shape)) / torch.where(hi != lo, hi - lo, 1.0).view(shape), e)
            out = out + e * (i + 1) ** alpha
            b = e
        channels.append(out[:, 0])
    return _red(torch.stack(channels, 1), p)


def ms_ssim_l1(t, p):
    """Zhao et al. 2017 as kornia computes it: full-resolution Gaussian windows, zero padding."""
    x, y = t["input"], t["target"]
    sigmas, L = p.get("sigmas", [0.5, 1.0, 2.0, 4.0, 8.0]), p.get("max_val", 1.0)
    c1, c2 = (p.get("k1", 0.01) * L) ** 2, (p.get("k2", 0.03) * L) ** 2
    pad = int(2 * sigmas[-1])
    size, ch = 2 * pad + 1, x.shape[1]

    def window(sigma):
        r = [math.exp(-((i - size // 2) ** 2) / (2 * sigma * sigma)) for i in range(size)]
        w = torch.tensor(r, dtype=x.dtype)
        w = w.unsqueeze(1) * w.unsqueeze(0)
        return (w / w.sum()).expand(ch, 1, size, size)

    def filt(z, w):
        return F.conv2d(z, w, groups=ch, padding=pad)

    cs_prod = 1
    for sigma in sigmas:
        w = window(sigma)
        mx, my = filt(x, w), filt(y, w)
        vx, vy, cxy = filt(x * x, w) - mx ** 2, filt(y * y, w) - my ** 2, filt(x * y, w) - mx * my
        cs_prod = cs_prod * (2 * cxy + c2) / (vx + vy + c2)
    lum = (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1)
    ms = 1 - (lum * cs_prod).mean(1)
    l1 = filt((x - y).abs(), window(sigmas[-1])).mean(1)
    a = p.get("alpha", 0.025)
    return _red(p.get("compensation", 200.0) * (a * ms + (1 - a) * l1 / L), p)


REFERENCES = {
    "ms_ssim_l1_loss": Reference(ms_ssim_l1, None, exact=False),
    "hausdorff_er_loss": Reference(hausdorff_er, None, exact=False),
    "ssim_loss": Reference(ssim, None, exact=False),
    "ms_ssim_loss": Reference(ms_ssim, None, exact=False),
    "hausdorff_dt_loss": Reference(hausdorff, None, exact=False),
}


def _img(seed, dt, *shape):
    return rand(*shape, dtype=dt, seed=seed)


def _near_binary(seed, dt, n, c, *spatial):
    return (torch.nn.functional.one_hot(randint(c, n, *spatial, seed=seed), c).movedim(-1, 1) * 0.8
            + rand(n, c, *spatial, dtype=torch.float64, seed=seed + 1) * 0.15).to(dt)


CASES = {
    "ms_ssim_l1_loss": [
        Case("two-sigmas", lambda dt: {"input": _img(17, dt, 1, 2, 5, 4), "target": _img(18, dt, 1, 2, 5, 4)},
             params={"sigmas": [0.5, 1.0], "alpha": 0.5, "compensation": 1.0}),
    ],
    "hausdorff_er_loss": [
        Case("2d", lambda dt: {"input": _near_binary(11, dt, 2, 3, 5, 4), "target": randint(3, 2, 1, 5, 4, seed=13)},
             params={"k": 3}),
        Case("3d", lambda dt: {"input": _near_binary(14, dt, 1, 2, 3, 4, 3), "target": randint(2, 1, 3, 4, 3, seed=16)},
             params={"k": 2, "alpha": 1.0}, reductions=("mean",)),
    ],
    "ssim_loss": [
        Case("same", lambda dt: {"input": _img(1, dt, 1, 2, 5, 4), "target": _img(2, dt, 1, 2, 5, 4)},
             params={"window_size": 5}),
        Case("valid-one-minus", lambda dt: {"input": _img(3, dt, 1, 1, 5, 5), "target": _img(4, dt, 1, 1, 5, 5)},
             params={"window_size": 3, "padding": "valid", "form": "one_minus", "max_val": 2.0}, reductions=("mean", "none")),
        Case("volume", lambda dt: {"input": _img(9, dt, 1, 1, 3, 4, 3), "target": _img(10, dt, 1, 1, 3, 4, 3)},
             params={"window_size": 3}, reductions=("mean",)),
    ],
    "ms_ssim_loss": [
        Case("two-scales", lambda dt: {"input": _img(5, dt, 1, 1, 6, 6), "target": _img(5, dt, 1, 1, 6, 6) * 0.7 + 0.1},
             params={"window_size": 3, "weights": [0.4, 0.6]}),
    ],
    "hausdorff_dt_loss": [
        Case("multilabel", lambda dt: {"input": _img(6, dt, 2, 2, 4, 3), "target": (_img(7, dt, 2, 2, 4, 3) > 0.5).to(dt)}),
        Case("multiclass-pooled", lambda dt: {"input": _img(8, dt, 1, 3, 3, 3) * 4 - 2,
                                              "target": torch.tensor([[[0, 1, 1], [2, 2, 1], [0, 0, 1]]])},
             params={"mode": "multiclass", "from_logits": True, "aggregation": "pooled", "include_background": False,
                     "alpha": 1.0, "log": True}),
    ],
}
