"""generalized_wasserstein_dice_loss: Fidon et al. 2017 (and Tilborghs et al.'s GDL weights), pixel by pixel."""

from __future__ import annotations

import torch

from support.parity import Case, Reference, randint, randn


def gwdl(t, p):
    x, y, m = t["input"], t["target"], t["dist_matrix"]
    m = m / m.max()
    n, c = x.shape[:2]
    probs = torch.softmax(x, 1).reshape(n, c, -1)
    labels = y.reshape(n, -1)
    out = []
    for b in range(n):
        volume = [int((labels[b] == k).sum()) for k in range(c)]
        tp = den = err = x.new_zeros(())
        for s in range(labels.shape[1]):
            k = int(labels[b, s])
            w = sum(m[k, j] * probs[b, j, s] for j in range(c))
            alpha = 1.0 / (volume[k] + 1) if p.get("weighting_mode") == "GDL" else float(k != 0)
            tp = tp + alpha * (1 - w)
            den = den + alpha * (2 - w)
            err = err + w
        if p.get("weighting_mode") != "GDL":
            den = 2 * tp + err
        out.append(1 - (2 * tp + p.get("smooth_nr", 1e-5)) / (den + p.get("smooth_dr", 1e-5)))
    loss = torch.stack(out)
    red = p.get("reduction", "mean")
    return loss.mean() if red == "mean" else (loss.sum() if red == "sum" else loss)


def _m(dt):
    return torch.tensor([[0.0, 2.0, 2.0], [2.0, 0.0, 1.0], [2.0, 1.0, 0.0]], dtype=dt)


REFERENCES = {"generalized_wasserstein_dice_loss": Reference(gwdl, None, exact=False)}

CASES = {
    "generalized_wasserstein_dice_loss": [
        Case("default", lambda dt: {"input": randn(2, 3, 2, 3, dtype=dt, seed=1), "target": randint(3, 2, 2, 3, seed=2),
                                    "dist_matrix": _m(dt)}),
        Case("gdl", lambda dt: {"input": randn(3, 3, 4, dtype=dt, seed=3), "target": randint(3, 3, 4, seed=4),
                                "dist_matrix": _m(dt)}, params={"weighting_mode": "GDL", "smooth_nr": 0.1}),
    ],
}
