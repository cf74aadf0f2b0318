"""Losses lossd defines (focal, overlap, quantile, log-cosh, InfoNCE): independent references.

Each reference is written from the published formula, deliberately naively
(no guarded powers, no stable rewrites), so it checks the server's version
rather than repeating it. They are compared to a tolerance (``exact=False``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from support.parity import Case, Reference, rand, randint, randn


def _reduce(x, reduction):
    return {"mean": x.mean, "sum": x.sum}.get(reduction, lambda: x)()


def binary_focal(t, p):
    y_pred, y_true = t["input"], t["target"]
    gamma, alpha = p.get("gamma", 2.0), p.get("alpha", 0.75)
    bce = F.binary_cross_entropy(y_pred, y_true, reduction="none")
    p_t = y_true * y_pred + (1 - y_true) * (1 - y_pred)
    alpha_factor = y_true * alpha + (1 - y_true) * (1 - alpha)
    modulating_factor = torch.pow(1.0 - p_t, gamma)
    return _reduce(alpha_factor * modulating_factor * bce, p.get("reduction", "mean"))


def torchvision_sigmoid_focal(t, p):
    """torchvision.ops.sigmoid_focal_loss, as published."""
    inputs, targets = t["input"], t["target"]
    alpha, gamma = p.get("alpha", 0.25), p.get("gamma", 2.0)
    prob = inputs.sigmoid()
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, p.get("reduction", "mean"))


def softmax_focal(t, p):
    x, target, alpha = t["input"], t["target"], t.get("alpha")
    gamma, ignore = p.get("gamma", 2.0), p.get("ignore_index", -100)
    probs = torch.softmax(x, dim=1)
    losses = []
    flat_x = probs.movedim(1, -1).reshape(-1, x.shape[1])
    for row, cls in zip(flat_x, target.reshape(-1).tolist()):
        if cls == ignore:
            losses.append(row.sum() * 0)
            continue
        pt = row[cls]
        w = alpha[cls] if alpha is not None else 1.0
        losses.append(-w * (1 - pt) ** gamma * torch.log(pt))
    loss = torch.stack(losses).reshape(target.shape)
    kept = (target != ignore).sum()
    red = p.get("reduction", "mean")
    return loss.sum() / kept if red == "mean" else _reduce(loss, red)


def _probs_and_onehot(t, p):
    x, y = t["input"], t["target"]
    mode, from_logits = p.get("mode", "binary"), p.get("from_logits", True)
    if mode == "multiclass":
        probs = torch.softmax(x, 1) if from_logits else x
        onehot = torch.stack([(y == c) for c in range(x.shape[1])], 1).to(x.dtype)
    else:
        probs = torch.sigmoid(x) if from_logits else x
        onehot = y.to(x.dtype)
        if mode == "binary":
            probs, onehot = probs.reshape(x.shape[0], 1, -1), onehot.reshape(x.shape[0], 1, -1)
    c = probs.shape[1]
    per_class_p = [probs[:, k].reshape(-1) for k in range(c)]
    per_class_t = [onehot[:, k].reshape(-1) for k in range(c)]
    return per_class_p, per_class_t


def overlap(kind):
    def ref(t, p):
        smooth, eps = p.get("smooth", 0.0), p.get("eps", 1e-7)
        a, b, g = p.get("alpha", 0.5), p.get("beta", 0.5), p.get("gamma", 1.0)
        losses = []
        for pk, tk in zip(*_probs_and_onehot(t, p)):
            tp = (pk * tk).sum()
            fp = (pk * (1 - tk)).sum()
            fn = ((1 - pk) * tk).sum()
            if kind == "dice":
                score = (2 * tp + smooth) / torch.clamp(2 * tp + fp + fn + smooth, min=eps)
                losses.append(1 - score)
            elif kind == "jaccard":
                score = (tp + smooth) / torch.clamp(tp + fp + fn + smooth, min=eps)
                losses.append(1 - score)
            else:
                score = (tp + smooth) / torch.clamp(tp + a * fp + b * fn + smooth, min=eps)
                losses.append((1 - score) ** g)
        return torch.stack(losses).mean()

    return ref


def quantile(t, p):
    qs = p.get("quantiles", [0.5])
    y_hat, y = t["input"], t["target"]
    cols = [y_hat] if len(qs) == 1 else [y_hat[..., i] for i in range(len(qs))]
    parts = []
    for q, col in zip(qs, cols):
        e = y - col
        parts.append(torch.where(e >= 0, q * e, (q - 1) * e))
    loss = parts[0] if len(qs) == 1 else torch.stack(parts, -1)
    return _reduce(loss, p.get("reduction", "mean"))


def log_cosh(t, p):
    return _reduce(torch.log(torch.cosh(t["input"] - t["target"])), p.get("reduction", "mean"))


def info_nce(t, p):
    temp, mode = p.get("temperature", 0.1), p.get("negative_mode", "unpaired")
    q = t["query"] / t["query"].norm(dim=1, keepdim=True)
    k = t["positive_key"] / t["positive_key"].norm(dim=1, keepdim=True)
    neg = t.get("negative_keys")
    rows = []
    for i in range(q.shape[0]):
        if neg is None:
            logits = torch.stack([q[i] @ k[j] for j in range(k.shape[0])]) / temp
            label = i
        else:
            negs = neg if mode == "unpaired" else neg[i]
            negs = negs / negs.norm(dim=-1, keepdim=True)
            logits = torch.cat([(q[i] @ k[i]).reshape(1), negs @ q[i]]) / temp
            label = 0
        rows.append(-(logits[label] - torch.logsumexp(logits, 0)))
    return _reduce(torch.stack(rows), p.get("reduction", "mean"))


REFERENCES = {
    "binary_focal_loss": Reference(binary_focal, None, exact=False),
    "sigmoid_focal_loss": Reference(torchvision_sigmoid_focal, None, exact=False),
    "softmax_focal_loss": Reference(softmax_focal, None, exact=False),
    "dice_loss": Reference(overlap("dice"), None, exact=False),
    "jaccard_loss": Reference(overlap("jaccard"), None, exact=False),
    "tversky_loss": Reference(overlap("tversky"), None, exact=False),
    "quantile_loss": Reference(quantile, None, exact=False),
    "log_cosh_loss": Reference(log_cosh, None, exact=False),
    "info_nce_loss": Reference(info_nce, None, exact=False),
}


def _probs(*shape, dt, seed):
    return rand(*shape, dtype=dt, seed=seed, low=0.02, high=0.98)


def _mask(*shape, dt, seed):
    return (rand(*shape, dtype=torch.float64, seed=seed) > 0.5).to(dt)


CASES = {
    "binary_focal_loss": [
        Case("defaults", lambda dt: {"input": _probs(3, 4, dt=dt, seed=1), "target": _mask(3, 4, dt=dt, seed=2)}),
        Case("soft-targets", lambda dt: {"input": _probs(6, dt=dt, seed=3), "target": _probs(6, dt=dt, seed=4)},
             params={"gamma": 0.5, "alpha": 0.25}),
        Case("gamma0", lambda dt: {"input": _probs(5, dt=dt, seed=5), "target": _mask(5, dt=dt, seed=6)},
             params={"gamma": 0.0, "alpha": 0.5}),
    ],
    "sigmoid_focal_loss": [
        Case("defaults", lambda dt: {"input": randn(4, 3, dtype=dt, seed=1), "target": _mask(4, 3, dt=dt, seed=2)}),
        Case("no-alpha", lambda dt: {"input": randn(5, dtype=dt, seed=3), "target": _probs(5, dt=dt, seed=4)},
             params={"alpha": -1.0, "gamma": 1.5}),
        Case("gamma-half", lambda dt: {"input": randn(2, 2, 2, dtype=dt, seed=5), "target": _mask(2, 2, 2, dt=dt, seed=6)},
             params={"gamma": 0.5, "alpha": 0.75}),
    ],
    "softmax_focal_loss": [
        Case("defaults", lambda dt: {"input": randn(5, 4, dtype=dt, seed=1), "target": randint(4, 5, seed=2)}),
        Case("alpha-ignore", lambda dt: {"input": randn(6, 3, dtype=dt, seed=3),
                                         "target": torch.tensor([0, 2, -100, 1, 2, 0]),
                                         "alpha": rand(3, dtype=dt, seed=4, low=0.2, high=1.0)},
             params={"gamma": 1.0}),
        Case("k-dim", lambda dt: {"input": randn(2, 3, 2, 2, dtype=dt, seed=5), "target": randint(3, 2, 2, 2, seed=6)},
             params={"gamma": 0.5, "ignore_index": 1}),
    ],
    **{
        name: [
            Case("binary", lambda dt: {"input": randn(3, 1, 4, 4, dtype=dt, seed=1), "target": _mask(3, 1, 4, 4, dt=dt, seed=2)}),
            Case("binary-probs-smooth", lambda dt: {"input": _probs(2, 5, dt=dt, seed=3), "target": _mask(2, 5, dt=dt, seed=4)},
                 params={"from_logits": False, "smooth": 1.0}),
            Case("multiclass", lambda dt: {"input": randn(2, 3, 4, dtype=dt, seed=5), "target": randint(3, 2, 4, seed=6)},
                 params={"mode": "multiclass"}),
            Case("multilabel", lambda dt: {"input": randn(4, 3, dtype=dt, seed=7), "target": _mask(4, 3, dt=dt, seed=8)},
                 params={"mode": "multilabel", "eps": 1e-5}),
        ]
        for name in ("dice_loss", "jaccard_loss")
    },
    "tversky_loss": [
        Case("binary", lambda dt: {"input": randn(3, 1, 4, dtype=dt, seed=1), "target": _mask(3, 1, 4, dt=dt, seed=2)},
             params={"alpha": 0.3, "beta": 0.7}),
        Case("multiclass-focal", lambda dt: {"input": randn(2, 3, 5, dtype=dt, seed=3), "target": randint(3, 2, 5, seed=4)},
             params={"mode": "multiclass", "alpha": 0.7, "beta": 0.3, "gamma": 1.33, "smooth": 0.5}),
    ],
    "quantile_loss": [
        Case("median", lambda dt: {"input": randn(8, dtype=dt, seed=1), "target": randn(8, dtype=dt, seed=2)}),
        Case("three-quantiles", lambda dt: {"input": randn(4, 3, dtype=dt, seed=3), "target": randn(4, dtype=dt, seed=4)},
             params={"quantiles": [0.1, 0.5, 0.9]}),
    ],
    "log_cosh_loss": [
        Case("matrix", lambda dt: {"input": randn(3, 4, dtype=dt, seed=1), "target": randn(3, 4, dtype=dt, seed=2)}),
    ],
    "info_nce_loss": [
        Case("in-batch", lambda dt: {"query": randn(4, 3, dtype=dt, seed=1), "positive_key": randn(4, 3, dtype=dt, seed=2)}),
        Case("unpaired-negatives", lambda dt: {"query": randn(3, 4, dtype=dt, seed=3), "positive_key": randn(3, 4, dtype=dt, seed=4),
                                              "negative_keys": randn(5, 4, dtype=dt, seed=5)}, params={"temperature": 0.5}),
        Case("paired-negatives", lambda dt: {"query": randn(3, 4, dtype=dt, seed=6), "positive_key": randn(3, 4, dtype=dt, seed=7),
                                            "negative_keys": randn(3, 2, 4, dtype=dt, seed=8)},
             params={"negative_mode": "paired"}),
    ],
}
