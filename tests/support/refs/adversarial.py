"""patch_adversarial_loss: MONAI's criteria written from their definitions."""

from __future__ import annotations

import torch

from support.parity import Case, Reference, randn


def patch_gan(t, p):
    x = t["input"]
    real = p.get("target_is_real", True)
    kind, red = p.get("criterion", "least_squares"), p.get("reduction", "mean")
    label = 1.0 if real else 0.0
    if kind == "bce":
        s = 1 / (1 + torch.exp(-x))
        loss = -(label * torch.log(s) + (1 - label) * torch.log(1 - s))
    elif kind == "least_squares":
        a = x if p.get("no_activation_leastsq") else torch.where(x > 0, x, 0.05 * x)
        loss = (a - label) ** 2
    else:
        h = torch.tanh(x) if real else -torch.tanh(x)
        return torch.where(h - 1 < 0, 1 - h, torch.zeros_like(h)).mean()
    return loss.mean() if red == "mean" else loss.sum()


REFERENCES = {"patch_adversarial_loss": Reference(patch_gan, None, exact=False)}

CASES = {
    "patch_adversarial_loss": [
        Case("least-squares-real", lambda dt: {"input": randn(2, 1, 3, 3, dtype=dt, seed=1)}),
        Case("bce-fake", lambda dt: {"input": randn(2, 4, dtype=dt, seed=2)}, params={"criterion": "bce", "target_is_real": False}),
        Case("hinge-fake", lambda dt: {"input": randn(3, 3, dtype=dt, seed=3)}, params={"criterion": "hinge", "target_is_real": False},
             reductions=("mean",)),
        Case("hinge-generator", lambda dt: {"input": randn(3, 3, dtype=dt, seed=4)},
             params={"criterion": "hinge", "for_discriminator": False}, reductions=("mean",)),
        Case("least-squares-no-activation", lambda dt: {"input": randn(5, dtype=dt, seed=5)},
             params={"no_activation_leastsq": True, "target_is_real": False}),
    ],
}
