"""Lovász losses: Berman et al.'s Algorithm 1 written step by step (a Python loop over the sorted errors)."""

from __future__ import annotations

import torch

from support.parity import Case, Reference, randint, randn


def _lovasz(errors, fg):
    """Σ_i e_(i) · (J(i) - J(i-1)), J(i) the Jaccard loss of the i largest errors counted as wrong."""
    order = sorted(range(len(errors)), key=lambda i: -float(errors[i].detach()))
    total = float(fg.sum())
    loss, previous, inter, union = errors.sum() * 0, 0.0, total, total
    for i in order:
        inter -= float(fg[i])
        union += 1 - float(fg[i])
        jac = 1 - inter / union
        loss = loss + errors[i] * (jac - previous)
        previous = jac
    return loss


def hinge(t, p):
    x, y = t["input"], t["target"]
    if x.dim() == y.dim() + 1:
        x = x[:, 0]
    ignore = p.get("ignore_index")
    groups = list(zip(x, y)) if p.get("per_image", True) else [(x, y)]
    losses = []
    for xs, ys in groups:
        xs, ys = xs.reshape(-1), ys.reshape(-1)
        if ignore is not None:
            xs, ys = xs[ys != ignore], ys[ys != ignore]
        ys = ys.to(x.dtype)
        losses.append(_lovasz(torch.relu(1 - xs * (2 * ys - 1)), ys) if len(ys) else xs.sum() * 0)
    return torch.stack(losses).mean()


def softmax(t, p):
    x, y = t["input"], t["target"]
    probs = torch.softmax(x, 1) if p.get("from_logits", True) else x
    ignore, present = p.get("ignore_index"), p.get("classes", "present") == "present"
    groups = list(zip(probs, y)) if p.get("per_image", False) else [(probs.movedim(0, 1), y)]
    losses = []
    for pr, ys in groups:
        pr, ys = pr.reshape(pr.shape[0], -1), ys.reshape(-1)
        if ignore is not None:
            pr, ys = pr[:, ys != ignore], ys[ys != ignore]
        per_class = []
        for c in range(pr.shape[0]):
            fg = (ys == c).to(x.dtype)
            if present and fg.sum() == 0:
                continue
            w = p["class_weights"][c] if p.get("class_weights") else 1.0
            per_class.append(w * _lovasz((fg - pr[c]).abs(), fg))
        losses.append(torch.stack(per_class).mean() if per_class else pr.sum() * 0)
    return torch.stack(losses).mean()


REFERENCES = {
    "lovasz_hinge_loss": Reference(hinge, None, exact=False),
    "lovasz_softmax_loss": Reference(softmax, None, exact=False),
}

CASES = {
    "lovasz_hinge_loss": [
        Case("per-image", lambda dt: {"input": randn(2, 1, 3, 3, dtype=dt, seed=1), "target": randint(2, 2, 3, 3, seed=2)}),
        Case("batch-ignore", lambda dt: {"input": randn(2, 5, dtype=dt, seed=3),
                                         "target": torch.tensor([[1, 0, 255, 1, 0], [0, 0, 1, 255, 1]])},
             params={"per_image": False, "ignore_index": 255}),
    ],
    "lovasz_softmax_loss": [
        Case("present", lambda dt: {"input": randn(2, 4, 5, dtype=dt, seed=4), "target": randint(3, 2, 5, seed=5)}),
        Case("per-image-all-ignore", lambda dt: {"input": randn(2, 3, 4, dtype=dt, seed=6),
                                                 "target": torch.tensor([[0, 2, -1, 2], [1, -1, 1, 1]])},
             params={"per_image": True, "classes": "all", "ignore_index": -1, "class_weights": [1.0, 0.5, 2.0]}),
    ],
}
