"""aucm_loss: Yuan et al. 2021's AUC-margin objective written from LibAUC's formulas, element sums."""

from __future__ import annotations

import torch

from support.parity import Case, Reference, rand, randn


def aucm(t, p):
    x, y = t["input"].reshape(-1), t["target"].reshape(-1)
    zero = x.sum() * 0
    a, b, al = (zero if t.get(k) is None else t[k].reshape(()) for k in ("a", "b", "alpha"))
    m, n = p.get("margin", 1.0), x.numel()
    pos = [i for i in range(n) if y[i] == 1]
    neg = [i for i in range(n) if y[i] == 0]
    if p.get("version", "v1") == "v1":
        r = p.get("imratio") if p.get("imratio") is not None else len(pos) / n
        e_pos = sum(((x[i] - a) ** 2 for i in pos), zero) / n
        e_neg = sum(((x[i] - b) ** 2 for i in neg), zero) / n
        inter = (sum((r * x[i] for i in neg), zero) - sum(((1 - r) * x[i] for i in pos), zero)) / n
        return (1 - r) * e_pos + r * e_neg + 2 * al * (r * (1 - r) * m + inter) - r * (1 - r) * al ** 2

    def mean(values):
        return sum(values, zero) / len(values) if values else zero

    return (mean([(x[i] - a) ** 2 for i in pos]) + mean([(x[i] - b) ** 2 for i in neg])
            + 2 * al * (m + mean([x[i] for i in neg]) - mean([x[i] for i in pos])) - al ** 2)


def _labels(n, dt, seed):
    return (rand(n, 1, dtype=torch.float64, seed=seed) > 0.5).to(dt)


REFERENCES = {"aucm_loss": Reference(aucm, None, exact=False)}

CASES = {
    "aucm_loss": [
        Case("v1-batch-ratio", lambda dt: {"input": randn(8, 1, dtype=dt, seed=1), "target": _labels(8, dt, 2),
                                           "a": torch.tensor(0.3, dtype=dt), "b": torch.tensor(-0.2, dtype=dt),
                                           "alpha": torch.tensor(0.7, dtype=dt)}),
        Case("v1-imratio-default-aux", lambda dt: {"input": randn(6, 1, 2, dtype=dt, seed=3),
                                                   "target": (rand(6, 1, 2, dtype=torch.float64, seed=4) > 0.5).to(dt)},
             params={"imratio": 0.3, "margin": 0.6}),
        Case("v2", lambda dt: {"input": randn(7, 1, dtype=dt, seed=5), "target": _labels(7, dt, 6),
                               "a": torch.tensor([0.5], dtype=dt), "alpha": torch.tensor(1.5, dtype=dt)},
             params={"version": "v2"}),
        Case("v2-no-negatives", lambda dt: {"input": randn(3, 1, dtype=dt, seed=7), "target": torch.ones(3, 1, dtype=dt)},
             params={"version": "v2"}),
    ],
}
