"""AUC-margin loss (Yuan et al. 2021, LibAUC; MONAI's AUCMLoss): a min-max surrogate of the area under
the ROC curve with a squared hinge. Its auxiliary variables ``a``, ``b`` (minimized, with the model)
and ``alpha`` (maximized) are inputs here, so the client holds them and gets their gradients.

>>> import torch
>>> scores, labels = torch.tensor([0.9, 0.2, 0.7, 0.1]), torch.tensor([1.0, 0.0, 1.0, 0.0])
>>> aucm_loss(scores, labels, None, None, None, margin=1.0, imratio=None, version="v2").item() > 0
True
"""

from __future__ import annotations

import torch

from ._registry import Equivalent, Input, Param, register_loss, require, require_same_shape

__all__ = ["aucm_loss"]


def _aux(name: str, role_doc: str) -> Input:
    return Input(name, "auxiliary variable", differentiable=True, required=False,
                 doc=f"scalar (0-d or one element), {role_doc}; absent: 0 (MONAI's initial value)")


def _scalar(value: torch.Tensor | None, name: str, like: torch.Tensor) -> torch.Tensor:
    if value is None:
        return like.new_zeros(())
    require(value.numel() == 1, f"inputs.{name}", f"must hold one number, got shape {list(value.shape)}")
    return value.reshape(())


@register_loss(
    "aucm_loss",
    batch_coupled=True,  # v1 estimates the positive ratio from the batch, v2 averages within each class
    aliases=("AUCMLoss", "auc_margin_loss"),
    refuses=(
        "a target shaped unlike input, or with values other than 0 and 1",
        "an empty input",
        "a, b or alpha holding more than one number",
    ),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",),
              doc="scores, any shape (MONAI's (N, 1, *)); flattened"),
        Input("target", "target", aliases=("y_true",), doc="labels 0 or 1, shaped like input"),
        _aux("a", "the positives' mean score estimate (minimized)"),
        _aux("b", "the negatives' mean score estimate (minimized)"),
        _aux("alpha", "the dual variable (maximized: ascend its gradient)"),
    ),
    params=(
        Param("margin", "float", 1.0, "Margin of the squared hinge.", min=0.0),
        Param("imratio", "float", None, "Share of positives in the training set (v1); null: the batch's share.",
              min=0.0, max=1.0, nullable=True),
        Param("version", "string", "v1", "'v1': global expectations weighted by the positive ratio p (LibAUC); "
              "'v2': class-conditional means, no p.", choices=("v1", "v2")),
    ),
    description="AUC-margin loss (Yuan et al. 2021): a min-max squared-hinge surrogate of AUROC; a, b and alpha are "
    "inputs with gradients.",
    source="lossd (Yuan et al. 2021; MONAI AUCMLoss conventions)",
    notes="v1: (1-p)·E[(x-a)²·pos] + p·E[(x-b)²·neg] + 2α(p(1-p)·margin + E[p·x·neg - (1-p)·x·pos]) - p(1-p)α²; "
    "v2: E[(x-a)² | pos] + E[(x-b)² | neg] + 2α(margin + E[x | neg] - E[x | pos]) - α² (a class with no element "
    "gives 0 for its means). Train the model, a and b by descent and alpha by ascent.",
    example=lambda dt: {
        "input": torch.tensor([[0.9], [0.2], [0.7], [0.4]], dtype=dt),
        "target": torch.tensor([[1.0], [0.0], [1.0], [0.0]], dtype=dt),
        "a": torch.tensor(0.5, dtype=dt), "b": torch.tensor(0.1, dtype=dt), "alpha": torch.tensor(0.2, dtype=dt),
    },
    equivalents=(
        Equivalent("monai.losses.AUCMLoss()", {}, "send the module's a, b and alpha as inputs"),
        Equivalent("monai.losses.AUCMLoss(margin=0.6, imratio=0.3)", {"margin": 0.6, "imratio": 0.3}, ""),
        Equivalent("monai.losses.AUCMLoss(version='v2')", {"version": "v2"}, ""),
    ),
)
def aucm_loss(input: torch.Tensor, target: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None,
              alpha: torch.Tensor | None, *, margin: float, imratio: float | None, version: str) -> torch.Tensor:
    """The AUC-margin objective of one batch (see notes); a scalar."""
    require_same_shape(input, target, "one label per score")
    require(input.numel() > 0, "inputs.input", "must hold at least one score")
    require(bool(((target == 0) | (target == 1)).all()), "inputs.target", "labels must be 0 or 1")
    a_, b_, alpha_ = (_scalar(v, n, input) for v, n in ((a, "a"), (b, "b"), (alpha, "alpha")))
    x, y = input.reshape(-1), target.reshape(-1)
    pos, neg = (y == 1).to(x.dtype), (y == 0).to(x.dtype)
    sq_pos, sq_neg = (x - a_) ** 2, (x - b_) ** 2
    if version == "v1":
        p = float(imratio) if imratio is not None else float(pos.mean().item())
        q = 1.0 - p
        interaction = ((p * x * neg - q * x * pos) * (pos + neg)).mean()
        return (q * (sq_pos * pos).mean() + p * (sq_neg * neg).mean()
                + 2 * alpha_ * (p * q * margin + interaction) - p * q * alpha_**2)

    def class_mean(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        count = mask.sum()
        return (t * mask).sum() / count if bool(count > 0) else t.new_zeros(())

    return (class_mean(sq_pos, pos) + class_mean(sq_neg, neg)
            + 2 * alpha_ * (margin + class_mean(x, neg) - class_mean(x, pos)) - alpha_**2)
