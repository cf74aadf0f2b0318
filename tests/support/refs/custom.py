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


def sigmoid_focal(t, p):
    """torchvision.ops.sigmoid_focal_loss as published; kornia's, smp's and MONAI's soft-target forms."""
    x, y = t["input"], t["target"]
    alpha, gamma, form = p.get("alpha", 0.25), p.get("gamma", 2.0), p.get("focal_form", "linear")
    ignore, thr = p.get("ignore_index"), p.get("reduced_threshold")
    keep = torch.ones_like(y, dtype=torch.bool) if ignore is None else y != ignore
    y = torch.where(keep, y, torch.zeros_like(y))
    if p.get("mode") == "multiclass":  # class indices: one-hot over dim 1, an ignored pixel in every class
        y = torch.stack([(y == c) for c in range(x.shape[1])], 1).to(x.dtype)
        keep = keep.unsqueeze(1).expand(x.shape)
    sf = p.get("label_smoothing", 0.0)
    y = (1 - y) * sf + y * (1 - sf)
    if not p.get("from_logits", True):
        eps = p.get("eps", 1e-7)
        x = torch.logit(x.clamp(eps, 1 - eps))
    prob = torch.sigmoid(x)
    shape = [-1] + [1] * (x.dim() - 2)
    pw = torch.tensor(p["pos_weight"], dtype=x.dtype).view(shape) if p.get("pos_weight") else 1.0
    w = torch.tensor(p["weight"], dtype=x.dtype).view(shape) if p.get("weight") else 1.0
    focal = None
    if form == "split":
        pos = -((1 - prob) ** gamma) * y * torch.log(prob)
        neg = -(prob ** gamma) * (1 - y) * torch.log(1 - prob)
        if alpha >= 0:
            pos, neg = alpha * pos, (1 - alpha) * neg
        loss = pw * pos + neg
    else:
        ce = -(pw * y * torch.log(prob) + (1 - y) * torch.log(1 - prob))
        if form == "linear":
            q = torch.softmax(x, 1) if p.get("activation") == "softmax" else prob
            one_minus_pt = 1 - (q * y + (1 - q) * (1 - y))
        elif form == "exp_bce":
            one_minus_pt = 1 - torch.exp(y * torch.log(prob) + (1 - y) * torch.log(1 - prob))
        else:
            one_minus_pt = torch.sigmoid(-x * (2 * y - 1))
        if thr is None:
            focal = one_minus_pt ** gamma
        else:
            focal = torch.where(1 - one_minus_pt < thr, torch.ones_like(x), (one_minus_pt / thr) ** gamma)
        loss = ce * focal
        if alpha >= 0:
            loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    if p.get("class_alpha"):  # MONAI: alpha[c] where the target is 1, else 1
        ca = torch.tensor(p["class_alpha"], dtype=x.dtype).view(shape)
        loss = loss * torch.where(y == 1, ca, torch.ones_like(ca))
    loss = torch.where(keep, w * loss, torch.zeros_like(loss))
    if p.get("normalized"):
        loss = loss / torch.clamp(torch.where(keep, focal, torch.zeros_like(focal)).sum(), min=1e-6)
    red = p.get("reduction", "mean")
    if red == "mean":
        return loss.sum() / keep.sum()
    if p.get("average_space"):
        n, c = loss.shape[:2]
        per = loss.reshape(n, c, -1).sum(-1) / keep.reshape(n, c, -1).sum(-1).clamp_min(1)
        return per.sum()
    return _reduce(loss, red)


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


def _overlap_inputs(t, p):
    """(probs, onehot) as (N, C, S), ignored elements zeroed, written from the definitions."""
    x, y = t["input"], t["target"]
    mode, from_logits, ignore = p.get("mode", "binary"), p.get("from_logits", True), p.get("ignore_index")
    if mode == "multiclass":
        probs = torch.softmax(x, 1) if from_logits else x
        if y.is_floating_point():
            onehot, keep = y, torch.ones_like(y, dtype=torch.bool)
        else:
            keep = torch.ones_like(y, dtype=torch.bool) if ignore is None else y != ignore
            onehot = torch.stack([(y == c) & keep for c in range(x.shape[1])], 1).to(x.dtype)
            keep = torch.stack([keep] * x.shape[1], 1)
    else:
        probs = torch.sigmoid(x) if from_logits else x
        keep = torch.ones_like(y, dtype=torch.bool) if ignore is None else y != ignore
        onehot = torch.where(keep, y, torch.zeros_like(y)).to(x.dtype)
        if mode == "binary":
            probs, onehot, keep = (v.reshape(x.shape[0], 1, -1) for v in (probs, onehot, keep))
    n, c = probs.shape[:2]
    probs, onehot, keep = (v.reshape(n, c, -1) for v in (probs, onehot, keep))
    if t.get("mask") is not None:  # (N or 1, 1, *): after the activation
        m = t["mask"].reshape(t["mask"].shape[0], 1, -1)
        if p.get("mask_target") == "class_indices":  # MONAI: class index times mask, so masked pixels are class 0
            background = torch.zeros_like(onehot)
            background[:, 0] = 1.0
            probs, onehot = probs * m, torch.where(m == 0, background, onehot)
        else:
            probs, onehot = probs * m, onehot * m
    return probs * keep, onehot * keep


def overlap(kind):
    def ref(t, p):
        smooth, eps = p.get("smooth", 0.0), p.get("eps", 1e-7)
        nr = smooth if p.get("smooth_nr") is None else p["smooth_nr"]
        dr = smooth if p.get("smooth_dr") is None else p["smooth_dr"]
        a, b = p.get("alpha", 0.3 if kind == "focal_tversky" else 0.5), p.get("beta", 0.7 if kind == "focal_tversky" else 0.5)
        g = p.get("gamma", 0.75 if kind == "focal_tversky" else 1.0)
        gamma_on, agg = p.get("gamma_on", "each"), p.get("aggregation", "pooled")
        probs, onehot = _overlap_inputs(t, p)
        classes = list(p.get("classes") or range(probs.shape[1]))
        if not p.get("include_background", True):
            classes = [c for c in classes if c != 0]
        weights = p.get("class_weights")
        wk = None if weights is None else torch.tensor([weights[c] for c in classes], dtype=probs.dtype)

        def unit(pk, tk, wu=1.0):  # wu: per-element class weights ('micro'), each term weighted once (kornia)
            if p.get("squared_pred"):
                tp, pp, tt = (wu * pk * tk).sum(), (wu * pk ** 2).sum(), (wu * tk ** 2).sum()
            else:
                tp = (wu * torch.minimum(pk, tk)).sum() if p.get("soft_label") else (wu * pk * tk).sum()
                pp, tt = (wu * pk).sum(), (wu * tk).sum()
            fp, fn = pp - tp, tt - tp
            if kind == "dice":
                score = (2 * tp + nr) / torch.clamp(2 * tp + fp + fn + dr, min=eps)
            elif kind == "jaccard":
                score = (tp + nr) / torch.clamp(tp + fp + fn + dr, min=eps)
            else:
                score = (tp + nr) / torch.clamp(tp + a * fp + b * fn + dr, min=eps)
            loss = -torch.log(torch.clamp(score, min=eps)) if p.get("log_loss") else 1 - score
            if kind in ("tversky", "focal_tversky") and gamma_on == "each":
                loss = loss ** g
            if p.get("empty_classes") in ("zero", "skip") and tt == 0:
                loss = loss * 0
            return loss

        if agg == "pooled":
            losses = torch.stack([unit(probs[:, c].reshape(-1), onehot[:, c].reshape(-1)) for c in classes])
        elif agg == "per_sample":
            losses = torch.stack([torch.stack([unit(probs[i, c], onehot[i, c]) for c in classes])
                                  for i in range(probs.shape[0])])
        else:
            scale = torch.ones(len(classes), dtype=probs.dtype) if wk is None else wk
            losses = torch.stack([unit(probs[i, classes].reshape(-1), onehot[i, classes].reshape(-1),
                                       scale[:, None].expand(-1, probs.shape[-1]).reshape(-1))
                                  for i in range(probs.shape[0])])
            wk = None
        red = p.get("reduction", "mean")
        if p.get("empty_classes") == "skip" and red == "mean":  # kornia 0.9: the class mean over present classes
            sums = onehot.sum(-1)[:, classes] if agg == "per_sample" else onehot.transpose(0, 1)[classes].sum((1, 2))
            rows = losses.reshape(-1, losses.shape[-1]) if losses.dim() else losses.reshape(1, 1)
            sums = sums.reshape(rows.shape)
            w = torch.ones(rows.shape[-1], dtype=rows.dtype) if wk is None else wk
            means = []
            for row, present in zip(rows, sums > 0):
                kept = [k for k in range(len(row)) if present[k]]
                means.append(sum(w[k] * row[k] for k in kept) / sum(w[k] for k in kept) if kept else row.sum() * 0 + 1)
            out = torch.stack(means).mean()
            return out ** g if gamma_on == "mean" else out
        if red == "none":
            return losses if wk is None else losses * wk
        if red == "sum":
            return losses.sum() if wk is None else (losses * wk).sum()
        if wk is None:
            out = losses.mean()
        else:
            out = ((losses * wk).sum(-1) / wk.sum()).mean()
        return out ** g if gamma_on == "mean" else out

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


def generalized_dice(t, p):
    """Sudre et al. 2017 with MONAI's conventions, sample by sample (or the pooled batch)."""
    probs, onehot = _overlap_inputs(t, p)
    if not p.get("include_background", True):
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    nr, dr, w_type = p.get("smooth_nr", 1e-5), p.get("smooth_dr", 1e-5), p.get("w_type", "square")
    groups = [(probs[i], onehot[i]) for i in range(probs.shape[0])]
    if p.get("aggregation", "per_sample") == "pooled":
        groups = [(probs.transpose(0, 1).reshape(probs.shape[1], -1), onehot.transpose(0, 1).reshape(onehot.shape[1], -1))]
    losses = []
    for pr, tg in groups:
        vol = tg.sum(1)
        w = [1.0 if w_type == "uniform" else (1 / float(v) ** (2 if w_type == "square" else 1) if v > 0 else None) for v in vol]
        finite = [x for x in w if x is not None]
        w = torch.tensor([x if x is not None else (max(finite) if finite else 0.0) for x in w], dtype=pr.dtype)
        num = 2 * ((pr * tg).sum(1) * w).sum() + nr
        den = ((pr.sum(1) + tg.sum(1)) * w).sum() + dr
        losses.append(1 - num / den)
    loss = torch.stack(losses)
    return _reduce(loss, p.get("reduction", "mean"))


def mcc(t, p):
    """smp's MCCLoss (eps on each count, pooled) and MONAI's (smooth_nr, smooth_dr under the root, per sample
    and class, 0 where FP = FN = 0), one unit at a time."""
    probs, onehot = _overlap_inputs(t, p | {"from_logits": p.get("from_logits", False)})
    eps, nr, dr = p.get("eps", 1e-5), p.get("smooth_nr", 0.0), p.get("smooth_dr", 0.0)
    classes = [c for c in range(probs.shape[1]) if p.get("include_background", True) or c != 0]

    def unit(pk, yk):
        tp, tn = (pk * yk).sum() + eps, ((1 - pk) * (1 - yk)).sum() + eps
        fp, fn = (pk * (1 - yk)).sum() + eps, ((1 - pk) * yk).sum() + eps
        if fp == 0 and fn == 0:
            return tp * 0
        return 1 - (tp * tn - fp * fn + nr) / torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn) + dr)

    if p.get("aggregation", "pooled") == "pooled":
        losses = torch.stack([unit(probs[:, c], onehot[:, c]) for c in classes])
    else:
        losses = torch.stack([torch.stack([unit(probs[i, c], onehot[i, c]) for c in classes])
                              for i in range(probs.shape[0])])
    return _reduce(losses, p.get("reduction", "mean"))


def nt_xent(t, p):
    """MONAI's ContrastiveLoss formula: exp of cosine similarities, self-pairs masked out."""
    temp = p.get("temperature", 0.5)
    z = torch.cat([t["input"], t["target"]])
    n2 = z.shape[0]
    sim = torch.stack([torch.stack([torch.dot(a, b) / (a.norm() * b.norm()) for b in z]) for a in z])
    rows = []
    for k in range(n2):
        positive = sim[k, (k + n2 // 2) % n2]
        denominator = sum(torch.exp(sim[k, j] / temp) for j in range(n2) if j != k)
        rows.append(-torch.log(torch.exp(positive / temp) / denominator))
    return _reduce(torch.stack(rows), p.get("reduction", "mean"))


def barlow(t, p):
    a, b = t["input"], t["target"]
    n, d = a.shape
    if p.get("normalization", "std") == "std":
        za, zb = (a - a.mean(0)) / (a.std(0) + 1e-6), (b - b.mean(0)) / (b.std(0) + 1e-6)
    else:
        za = (a - a.mean(0)) / torch.sqrt(((a - a.mean(0)) ** 2).mean(0) + 1e-5)
        zb = (b - b.mean(0)) / torch.sqrt(((b - b.mean(0)) ** 2).mean(0) + 1e-5)
    lambd = p.get("lambd", 5e-3)
    loss = a.sum() * 0
    for i in range(d):
        for j in range(d):
            c = (za[:, i] * zb[:, j]).sum() / n
            loss = loss + ((c - 1) ** 2 if i == j else lambd * c ** 2)
    return loss


REFERENCES = {
    "generalized_dice_loss": Reference(generalized_dice, None, exact=False),
    "mcc_loss": Reference(mcc, None, exact=False),
    "nt_xent_loss": Reference(nt_xent, None, exact=False),
    "barlow_twins_loss": Reference(barlow, None, exact=False),
    "binary_focal_loss": Reference(binary_focal, None, exact=False),
    "sigmoid_focal_loss": Reference(sigmoid_focal, None, exact=False),
    "softmax_focal_loss": Reference(softmax_focal, None, exact=False),
    "dice_loss": Reference(overlap("dice"), None, exact=False),
    "jaccard_loss": Reference(overlap("jaccard"), None, exact=False),
    "tversky_loss": Reference(overlap("tversky"), None, exact=False),
    "focal_tversky_loss": Reference(overlap("focal_tversky"), None, exact=False),
    "quantile_loss": Reference(quantile, None, exact=False),
    "log_cosh_loss": Reference(log_cosh, None, exact=False),
    "info_nce_loss": Reference(info_nce, None, exact=False),
}


def _probs(*shape, dt, seed):
    return rand(*shape, dtype=dt, seed=seed, low=0.02, high=0.98)


def _mask(*shape, dt, seed):
    return (rand(*shape, dtype=torch.float64, seed=seed) > 0.5).to(dt)


_OVERLAP_CONVENTIONS = [
    Case("multiclass-ignore-weights-classes", lambda dt: {"input": randn(2, 3, 6, dtype=dt, seed=11),
                                                          "target": torch.tensor([[0, 2, -1, 1, 2, 2], [1, 1, 0, -1, 2, 0]])},
         params={"mode": "multiclass", "ignore_index": -1, "class_weights": [0.5, 2.0, 1.0], "classes": [2, 0],
                 "empty_classes": "zero", "smooth": 0.5}),
    Case("multilabel-per-sample-monai", lambda dt: {"input": randn(3, 2, 4, dtype=dt, seed=12), "target": _mask(3, 2, 4, dt=dt, seed=13)},
         params={"mode": "multilabel", "aggregation": "per_sample", "smooth_nr": 1e-5, "smooth_dr": 1e-5, "eps": 0.0,
                 "include_background": False, "squared_pred": True}),
    Case("micro-weighted-kornia", lambda dt: {"input": randn(2, 3, 2, 2, dtype=dt, seed=14), "target": randint(3, 2, 2, 2, seed=15)},
         params={"mode": "multiclass", "aggregation": "micro", "smooth_nr": 0.0, "smooth_dr": 1e-8, "eps": 0.0,
                 "class_weights": [1.0, 2.0, 0.5]}),
    Case("soft-labels-log-loss-empty", lambda dt: {"input": randn(2, 2, 5, dtype=dt, seed=16),
                                                   "target": rand(2, 2, 5, dtype=dt, seed=17) * torch.tensor([1.0, 0.0]).view(1, 2, 1).to(dt)},
         params={"mode": "multilabel", "soft_label": True, "log_loss": True, "empty_classes": "zero",
                 "aggregation": "per_sample", "smooth": 1.0}),
    Case("kornia-skip-absent-classes", lambda dt: {"input": randn(3, 3, 4, dtype=dt, seed=20),
                                                   "target": torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2], [0, 1, 0, 1]])},
         params={"mode": "multiclass", "aggregation": "per_sample", "empty_classes": "skip", "smooth": 0.1},
         reductions=("mean",)),
    Case("monai-mask", lambda dt: {"input": randn(2, 3, 2, 3, dtype=dt, seed=21), "target": randint(3, 2, 2, 3, seed=22),
                                   "mask": _mask(1, 1, 2, 3, dt=dt, seed=23)},
         params={"mode": "multiclass", "aggregation": "per_sample", "smooth_nr": 1e-5, "smooth_dr": 1e-5, "eps": 0.0}),
    Case("monai-mask-class-indices", lambda dt: {"input": randn(2, 3, 2, 3, dtype=dt, seed=24),
                                                 "target": randint(3, 2, 2, 3, seed=25),
                                                 "mask": _mask(2, 1, 2, 3, dt=dt, seed=26)},
         params={"mode": "multiclass", "aggregation": "per_sample", "smooth_nr": 1e-5, "smooth_dr": 1e-5, "eps": 0.0,
                 "mask_target": "class_indices"}),
    Case("softmax-one-hot-target", lambda dt: {"input": randn(2, 3, 4, dtype=dt, seed=18),
                                               "target": torch.nn.functional.one_hot(randint(3, 2, 4, seed=19), 3).movedim(-1, 1).to(dt)},
         params={"mode": "multiclass", "aggregation": "per_sample"}),
]

def _soft_with_ones(*shape, dt, seed):
    """Soft labels in [0, 1] with every third element exactly 1 (MONAI's per-class alpha weighs those only)."""
    t = rand(*shape, dtype=torch.float64, seed=seed).reshape(-1)
    t[::3] = 1.0
    return t.reshape(shape).to(dt)


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
        *[Case(f"soft-{form}", lambda dt: {"input": randn(2, 3, 2, dtype=dt, seed=7), "target": _probs(2, 3, 2, dt=dt, seed=8)},
               params={"focal_form": form, "pos_weight": [2.0, 0.5, 1.0], "weight": [1.0, 3.0, 0.5]})
          for form in ("linear", "split", "exp_bce", "logit")],
        Case("smp-probs-normalized-ignore", lambda dt: {"input": _probs(3, 4, dt=dt, seed=9),
                                                        "target": torch.tensor([[1.0, 0, -1, 1], [0, 0, 1, -1], [1, 1, 0, 0]], dtype=dt)},
             params={"focal_form": "exp_bce", "from_logits": False, "normalized": True, "ignore_index": -1, "alpha": -1.0}),
        Case("reduced", lambda dt: {"input": randn(6, dtype=dt, seed=10), "target": _mask(6, dt=dt, seed=11)},
             params={"focal_form": "exp_bce", "reduced_threshold": 0.5, "alpha": -1.0}),
        Case("label-smoothing", lambda dt: {"input": randn(2, 3, dtype=dt, seed=12), "target": _mask(2, 3, dt=dt, seed=13)},
             params={"label_smoothing": 0.1, "gamma": 0.0, "alpha": -1.0, "pos_weight": [2.0, 0.5, 1.0]}),
        Case("monai-class-alpha-soft", lambda dt: {"input": randn(2, 3, 4, dtype=dt, seed=14),
                                                   "target": _soft_with_ones(2, 3, 4, dt=dt, seed=15)},
             params={"focal_form": "logit", "alpha": -1.0, "class_alpha": [0.25, 0.5, 0.75]}),
        Case("monai-sum-averages-space", lambda dt: {"input": randn(2, 3, 2, 3, dtype=dt, seed=16),
                                                     "target": _mask(2, 3, 2, 3, dt=dt, seed=17)},
             params={"focal_form": "logit", "average_space": True, "reduction": "sum"}, reductions=("sum",)),
        Case("average-space-ignore", lambda dt: {"input": randn(2, 2, 4, dtype=dt, seed=18),
                                                 "target": torch.tensor([[[1.0, -1, 0, 1], [-1, -1, 0, 1]],
                                                                         [[0.0, 0, 1, -1], [1, 1, 1, 1]]], dtype=dt)},
             params={"average_space": True, "ignore_index": -1, "reduction": "sum"}, reductions=("sum",)),
        Case("multiclass-ignore", lambda dt: {"input": randn(2, 3, 4, dtype=dt, seed=14),
                                              "target": torch.tensor([[0, 2, -1, 1], [1, -1, 2, 0]])},
             params={"mode": "multiclass", "ignore_index": -1, "focal_form": "exp_bce", "alpha": -1.0}),
        Case("multiclass-softmax", lambda dt: {"input": randn(2, 3, 2, 2, dtype=dt, seed=15),
                                               "target": randint(3, 2, 2, 2, seed=16)},
             params={"mode": "multiclass", "activation": "softmax", "gamma": 1.5, "weight": [1.0, 2.0, 0.5]}),
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
            *_OVERLAP_CONVENTIONS,
        ]
        for name in ("dice_loss", "jaccard_loss")
    },
    "tversky_loss": [
        Case("binary", lambda dt: {"input": randn(3, 1, 4, dtype=dt, seed=1), "target": _mask(3, 1, 4, dt=dt, seed=2)},
             params={"alpha": 0.3, "beta": 0.7}),
        Case("multiclass-focal", lambda dt: {"input": randn(2, 3, 5, dtype=dt, seed=3), "target": randint(3, 2, 5, seed=4)},
             params={"mode": "multiclass", "alpha": 0.7, "beta": 0.3, "gamma": 1.33, "smooth": 0.5}),
        Case("smp-gamma-on-mean", lambda dt: {"input": randn(2, 3, 5, dtype=dt, seed=3), "target": randint(3, 2, 5, seed=4)},
             params={"mode": "multiclass", "alpha": 0.3, "beta": 0.7, "gamma": 0.5, "gamma_on": "mean",
                     "soft_label": True, "class_weights": [1.0, 2.0, 0.5]}, reductions=("mean",)),
        *_OVERLAP_CONVENTIONS,
    ],
    "focal_tversky_loss": [
        Case("defaults", lambda dt: {"input": randn(2, 1, 6, dtype=dt, seed=5), "target": _mask(2, 1, 6, dt=dt, seed=6)}),
        Case("multiclass-per-sample", lambda dt: {"input": randn(3, 3, 4, dtype=dt, seed=7), "target": randint(3, 3, 4, seed=8)},
             params={"mode": "multiclass", "aggregation": "per_sample", "smooth": 1.0}),
    ],
    "generalized_dice_loss": [
        Case("multiclass", lambda dt: {"input": randn(2, 3, 5, dtype=dt, seed=1), "target": torch.tensor([[0, 0, 1, 1, 0], [1, 1, 1, 0, 1]])},
             params={"mode": "multiclass"}),
        Case("multilabel-simple-pooled", lambda dt: {"input": randn(2, 2, 4, dtype=dt, seed=2), "target": _mask(2, 2, 4, dt=dt, seed=3)},
             params={"mode": "multilabel", "w_type": "simple", "aggregation": "pooled", "include_background": False}),
    ],
    "mcc_loss": [
        Case("probs", lambda dt: {"input": _probs(2, 6, dt=dt, seed=1), "target": _mask(2, 6, dt=dt, seed=2)}),
        Case("logits", lambda dt: {"input": randn(3, 1, 4, dtype=dt, seed=3), "target": _mask(3, 1, 4, dt=dt, seed=4)},
             params={"from_logits": True, "eps": 1e-3}),
        Case("monai-multilabel", lambda dt: {"input": randn(2, 3, 4, dtype=dt, seed=5), "target": _mask(2, 3, 4, dt=dt, seed=6)},
             params={"mode": "multilabel", "from_logits": True, "eps": 0.0, "smooth_nr": 1e-3, "smooth_dr": 1e-5,
                     "aggregation": "per_sample"}, reductions=("none", "mean", "sum")),
        Case("multiclass", lambda dt: {"input": randn(2, 3, 5, dtype=dt, seed=7), "target": randint(3, 2, 5, seed=8)},
             params={"mode": "multiclass", "from_logits": True, "include_background": False}, reductions=("none", "sum")),
    ],
    "nt_xent_loss": [
        Case("simclr", lambda dt: {"input": randn(3, 4, dtype=dt, seed=1), "target": randn(3, 4, dtype=dt, seed=2)}),
        Case("temperature", lambda dt: {"input": randn(4, 3, dtype=dt, seed=3), "target": randn(4, 3, dtype=dt, seed=4)},
             params={"temperature": 0.1}, reductions=("none",)),
    ],
    "barlow_twins_loss": [
        Case("std", lambda dt: {"input": randn(5, 3, dtype=dt, seed=1), "target": randn(5, 3, dtype=dt, seed=2)}),
        Case("batch-norm", lambda dt: {"input": randn(4, 3, dtype=dt, seed=3), "target": randn(4, 3, dtype=dt, seed=4)},
             params={"normalization": "batch_norm", "lambd": 0.1}),
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
