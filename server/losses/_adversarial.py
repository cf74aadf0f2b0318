"""The patch-GAN adversarial loss of one discriminator output (MONAI's PatchAdversarialLoss): least
squares, BCE or hinge against the constant label the flags name (real or fake; discriminator or
generator).

>>> import torch
>>> patch_adversarial_loss(torch.tensor([[0.5, -0.5]]), criterion="hinge", target_is_real=True,
...                        for_discriminator=True, no_activation_leastsq=False, reduction="mean").item() > 0
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._registry import Equivalent, Input, Param, register_loss, require

__all__ = ["patch_adversarial_loss"]


@register_loss(
    "patch_adversarial_loss",
    aliases=("PatchAdversarialLoss", "patch_gan_loss"),
    refuses=("target_is_real false with for_discriminator false (a generator is trained towards real)",),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",),
              doc="one discriminator's output (logits), any shape"),
    ),
    params=(
        Param("criterion", "string", "least_squares", "'least_squares': MSE after leaky ReLU (slope 0.05); 'bce': BCE "
              "after sigmoid; 'hinge': -mean(min(±tanh(x) - 1, 0)) (- for fake).",
              choices=("least_squares", "bce", "hinge")),
        Param("target_is_real", "bool", True, "The label: real (1) or fake (0)."),
        Param("for_discriminator", "bool", True, "The discriminator's loss (true) or the generator's (false)."),
        Param("no_activation_leastsq", "bool", False, "least_squares without the leaky ReLU."),
        Param("reduction", "string", "mean", "'mean' or 'sum' (of the elements for least_squares and bce; hinge is "
              "always a mean, MONAI).", choices=("mean", "sum")),
    ),
    description="Patch-GAN adversarial loss of one discriminator output (MONAI PatchAdversarialLoss): least squares, "
    "BCE or hinge.",
    source="lossd (MONAI PatchAdversarialLoss conventions)",
    notes="MONAI also takes a list of outputs (multi-scale discriminators) and averages or sums their losses; send "
    "one request per output (or one objective term each). No target: TrainJob cannot use it.",
    example=lambda dt: {"input": torch.tensor([[[0.8, -0.3], [1.5, 0.2]]], dtype=dt),
                        "params": {"criterion": "hinge", "target_is_real": False}},
    equivalents=(
        Equivalent("monai.losses.PatchAdversarialLoss()(x, target_is_real=True, for_discriminator=True)", {}, ""),
        Equivalent("monai.losses.PatchAdversarialLoss(criterion='bce', reduction='sum')(x, target_is_real=False, "
                   "for_discriminator=True)", {"criterion": "bce", "target_is_real": False, "reduction": "sum"}, ""),
        Equivalent("monai.losses.PatchAdversarialLoss(criterion='hinge')(x, target_is_real=True, "
                   "for_discriminator=False)", {"criterion": "hinge", "for_discriminator": False}, ""),
    ),
)
def patch_adversarial_loss(input: torch.Tensor, *, criterion: str, target_is_real: bool, for_discriminator: bool,
                           no_activation_leastsq: bool, reduction: str) -> torch.Tensor:
    """The criterion against the label ``target_is_real`` (see the parameters)."""
    require(for_discriminator or target_is_real, "params.target_is_real",
            "must be true when for_discriminator is false (a generator is trained towards real)")
    label = torch.full_like(input, 1.0 if target_is_real else 0.0)
    if criterion == "bce":
        return F.binary_cross_entropy(torch.sigmoid(input), label, reduction=reduction)
    if criterion == "least_squares":
        x = input if no_activation_leastsq else F.leaky_relu(input, 0.05)
        return F.mse_loss(x, label, reduction=reduction)
    x = torch.tanh(input)
    if not target_is_real:
        x = -x
    return -torch.min(x - 1, torch.zeros_like(x)).mean()
