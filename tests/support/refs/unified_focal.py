"""The asymmetric (unified) focal losses: Yeung et al. 2022 as MONAI writes them, term by term."""

from __future__ import annotations

import torch

from support.parity import Case, Reference, rand, randint


def _two(t, p):
    x, y = t["input"], t["target"]
    if not y.is_floating_point():
        y = torch.stack([y == 0, y == 1], 1).to(x.dtype)
    elif y.shape[1] == 1:
        y = torch.cat([1 - y, y], 1)
    if x.shape[1] == 1:
        x = torch.cat([1 - x, x], 1)
    e = p.get("epsilon", 1e-7)
    return torch.clamp(x, e, 1 - e), y


def _focal(x, y, p, gamma):
    d = p.get("delta", 0.7)
    back = (1 - d) * (1 - x[:, 0]) ** gamma * (-y[:, 0] * torch.log(x[:, 0]))
    fore = d * (-y[:, 1] * torch.log(x[:, 1]))
    return torch.stack([back, fore], 1)


def _tversky(x, y, p, gamma):
    d, e = p.get("delta", 0.7), p.get("epsilon", 1e-7)
    axes = list(range(2, x.dim()))
    tp, fn, fp = (y * x).sum(axes), (y * (1 - x)).sum(axes), ((1 - y) * x).sum(axes)
    ti = (tp + e) / (tp + d * fn + (1 - d) * fp + e)
    return torch.stack([1 - ti[:, 0], (1 - ti[:, 1]) ** (1 - gamma)], -1)


def _reduce(loss, p):
    red = p.get("reduction", "mean")
    return loss.mean() if red == "mean" else (loss.sum() if red == "sum" else loss)


def focal(t, p):
    return _reduce(_focal(*_two(t, p), p, p.get("gamma", 2.0)), p)


def tversky(t, p):
    return _reduce(_tversky(*_two(t, p), p, p.get("gamma", 0.75)), p)


def unified(t, p):
    x, y = _two(t, p)
    g, w = p.get("gamma", 0.5), p.get("weight", 0.5)
    return w * _focal(x, y, p, g).mean() + (1 - w) * _tversky(x, y, p, g).mean()


def _probs2(*shape, dt, seed):
    fore = rand(shape[0], 1, *shape[2:], dtype=torch.float64, seed=seed, low=0.05, high=0.95)
    return torch.cat([1 - fore, fore], 1).to(dt)


def _mask(*shape, dt, seed):
    return (rand(*shape, dtype=torch.float64, seed=seed) > 0.5).to(dt)


REFERENCES = {
    "asymmetric_focal_loss": Reference(focal, None, exact=False),
    "asymmetric_focal_tversky_loss": Reference(tversky, None, exact=False),
    "asymmetric_unified_focal_loss": Reference(unified, None, exact=False),
}

_CASES = [
    Case("one-hot", lambda dt: {"input": _probs2(2, 2, 3, 4, dt=dt, seed=1),
                                "target": torch.stack([1 - _mask(2, 3, 4, dt=dt, seed=2), _mask(2, 3, 4, dt=dt, seed=2)], 1)}),
    Case("indices", lambda dt: {"input": _probs2(3, 2, 5, dt=dt, seed=3), "target": randint(2, 3, 5, seed=4)},
         params={"delta": 0.6, "gamma": 0.25}),
    Case("foreground-only", lambda dt: {"input": rand(2, 1, 6, dtype=dt, seed=5, low=0.05, high=0.95),
                                        "target": _mask(2, 1, 6, dt=dt, seed=6)}, params={"epsilon": 1e-4}),
]

CASES = {
    "asymmetric_focal_loss": list(_CASES),
    "asymmetric_focal_tversky_loss": list(_CASES),
    "asymmetric_unified_focal_loss": [*_CASES, Case("weight", lambda dt: {"input": _probs2(2, 2, 4, dt=dt, seed=7),
                                                                          "target": randint(2, 2, 4, seed=8)},
                                                    params={"weight": 0.2, "gamma": 0.9, "delta": 0.4})],
}
