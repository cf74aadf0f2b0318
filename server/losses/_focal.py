"""Focal losses: the seed's binary form, torchvision's sigmoid form, and a softmax form.

All three down-weight easy examples by ``(1 - p_t) ** gamma``. For
``0 < gamma < 1`` the naive power has an infinite derivative where
``p_t == 1`` (saturated logits), which turns gradients into NaN; the
modulating factor here is computed with a guarded base so gradients stay
finite and exact elsewhere. The binary form's cross-entropy has the same
trap in its target's gradient (:class:`_BinaryCrossEntropy`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ._registry import (
    REDUCTION,
    Equivalent,
    Input,
    Param,
    reduce,
    register_loss,
    register_split_name,
    require,
    require_class_indices,
    require_same_shape,
    require_unit_interval,
    widened,
)

__all__ = ["modulating_factor"]


def modulating_factor(q: torch.Tensor, gamma: float) -> torch.Tensor:
    """``q ** gamma`` with a finite gradient at ``q == 0`` (``q = 1 - p_t >= 0``).

    >>> modulating_factor(torch.tensor([0.0, 0.25]), 0.5).tolist()
    [0.0, 0.5]
    """
    if gamma == 0:
        return torch.ones_like(q)
    positive = q > 0
    safe = torch.where(positive, q, torch.ones_like(q))
    return torch.where(positive, safe.pow(gamma), torch.zeros_like(q))


_GAMMA = Param("gamma", "float", 2.0, "Focusing parameter: how strongly easy examples are down-weighted.", min=0.0)


class _BinaryCrossEntropy(torch.autograd.Function):
    """``F.binary_cross_entropy(input, target, reduction="none")``: torch's value and input gradient, bit for bit,
    and for the target the derivative of that value, ``max(log(1 - p), -100) - max(log p, -100)`` (the logs
    clamped as torch's forward clamps them).

    torch's own target gradient is ``-logit(p)``: the same where neither log is clamped (and kept there, bit
    for bit), but ±inf at a probability of exactly 0 or 1, so NaN once multiplied by the focal factor, which
    is 0 at a perfect prediction (the limit there is 0).

    >>> p = torch.tensor([1.0, 0.0], requires_grad=True)
    >>> t = p.detach().clone().requires_grad_()
    >>> torch.autograd.grad(_binary_cross_entropy(p, t).sum(), t)[0].tolist()
    [-100.0, 100.0]
    """

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(input, target)
        return F.binary_cross_entropy(input, target, reduction="none")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        input, target = ctx.saved_tensors
        grad_input = grad_target = None
        if ctx.needs_input_grad[0]:  # what autograd calls for torch's binary_cross_entropy (reduction 'none': 0)
            grad_input = torch.ops.aten.binary_cross_entropy_backward(grad, input, target, None, 0)
        if ctx.needs_input_grad[1]:
            log_p, log_q = input.log(), torch.log1p(-input)
            clamped = (log_p.clamp_min(-100) - log_q.clamp_min(-100)).neg()
            slope = torch.where((log_p >= -100) & (log_q >= -100), torch.logit(input).neg(), clamped)
            grad_target = (grad * slope).to(target.dtype)
        return grad_input, grad_target


def _binary_cross_entropy(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:class:`_BinaryCrossEntropy` applied (``Function.apply`` is untyped in torch's stubs)."""
    out: torch.Tensor = _BinaryCrossEntropy.apply(input, target)  # type: ignore[no-untyped-call]
    return out



def _binary_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([0.9, 0.2, 0.6, 0.05], dtype=dt),
        "target": torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=dt),
    }


@register_loss(
    "binary_focal_loss",
    refuses=(
        "an input shaped unlike the target",
        "probabilities or labels outside [0, 1]",
        "alpha outside [0, 1], gamma < 0",
    ),
    inputs=(
        Input(
            "input", "prediction", differentiable=True, aliases=("y_pred",), doc="probabilities in [0, 1], any shape"
        ),
        Input("target", "target", differentiable=True, aliases=("y_true",), doc="labels in [0, 1], same shape"),
    ),
    params=(
        _GAMMA,
        Param("alpha", "float", 0.75, "Weight of positive examples (negatives get 1 - alpha).", min=0.0, max=1.0),
        REDUCTION,
    ),
    description="Focal loss on probabilities (the seed's FocalLoss): alpha_t * (1 - p_t)^gamma * BCE.",
    source="lossd (seed's FocalLoss)",
    notes="The target's gradient is the derivative of the value as computed, BCE's logs clamped at -100 as torch "
    "clamps them: finite at probabilities of 0 and 1, and 0 at a perfect prediction (torch's "
    "binary_cross_entropy gives -logit(p) there, ±inf, and inf · 0 is NaN). Value and input gradient are torch's.",
    example=_binary_example,
    equivalents=(
        Equivalent(
            "segmentation_models_pytorch.losses.FocalLoss(mode='binary', alpha=0.75, from_logits=False)",
            {},
            "0/1 labels, probabilities in [1e-7, 1 - 1e-7] (smp clamps them there; soft labels "
            "differ: smp's p_t is exp(-BCE))",
        ),
    ),
)
def binary_focal_loss(
    input: torch.Tensor, target: torch.Tensor, *, gamma: float, alpha: float, reduction: str
) -> torch.Tensor:
    """``bce = BCE(input, target)``, ``p_t = t*p + (1-t)*(1-p)``,
    ``alpha_t = t*alpha + (1-t)*(1-alpha)``; loss = ``alpha_t * (1-p_t)^gamma * bce``.

    Shape: input and target any shape, equal; output scalar, or input's shape for 'none'.
    """
    require_same_shape(input, target, "the loss is elementwise")
    require_unit_interval(input, "inputs.input", "probabilities")
    require_unit_interval(target, "inputs.target", "labels")
    bce = _binary_cross_entropy(input, target)  # the target's gradient finite at probabilities of 0 and 1
    p_t = target * input + (1 - target) * (1 - input)
    alpha_t = target * alpha + (1 - target) * (1 - alpha)
    return reduce(alpha_t * modulating_factor(1 - p_t, gamma) * bce, reduction)


def _sigmoid_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([2.0, -1.0, 0.5, -3.0], dtype=dt),
        "target": torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=dt),
    }


_FOCAL_FORMS = ("linear", "split", "exp_bce", "logit")


def _class_vector(values: list[float] | None, input: torch.Tensor, field: str) -> torch.Tensor | None:
    """A per-class list as a tensor broadcasting along dim 1 of ``input``."""
    if values is None:
        return None
    require(input.dim() >= 2, field, f"per-class values need input (N, C, *), got shape {list(input.shape)}")
    require(
        len(values) == input.shape[1], field, f"needs one value per class (dim 1): {input.shape[1]}, got {len(values)}"
    )
    return torch.tensor(values, dtype=input.dtype, device=input.device).view(-1, *([1] * (input.dim() - 2)))


@register_loss(
    "sigmoid_focal_loss",
    refuses=(
        "an input shaped unlike the target",
        "labels outside [0, 1] other than ignore_index",
        "mode 'multiclass': targets not integer class indices (N, *) in [0, C) or ignore_index",
        "activation 'softmax' without an input (N, C, *), with a focal_form other than 'linear' or from_logits false",
        "per-class values (pos_weight, weight) not one per class of dim 1",
        "alpha > 1, gamma < 0",
    ),
    mean_normalizer="weight",  # with ignore_index, 'mean' divides by the count of kept elements
    aliases=("SigmoidFocalLoss",),
    inputs=(
        Input(
            "input",
            "prediction",
            differentiable=True,
            aliases=("y_pred",),
            doc="logits (probabilities with from_logits=false), any shape; (N, C, *) for per-class weights",
        ),
        Input(
            "target",
            "target",
            kind="float|int",
            differentiable=True,
            aliases=("y_true",),
            doc="labels in [0, 1] (or ignore_index), same shape; mode 'multiclass': class indices (N, *)",
        ),
    ),
    params=(
        Param("alpha", "float", 0.25, "Weight of positives in [0, 1]; negative disables weighting.", max=1.0),
        _GAMMA,
        Param(
            "reduction",
            "string",
            "mean",
            "'none', 'mean' (default here; torchvision's default is 'none') or 'sum'.",
            choices=("none", "mean", "sum"),
        ),
        Param(
            "focal_form",
            "string",
            "linear",
            "How soft targets enter (all equal for 0/1 targets): 'linear' p_t = p·t + (1-p)(1-t) (torchvision); "
            "'split' -α(1-p)^γ·t·log p - (1-α)p^γ·(1-t)·log(1-p) (kornia); 'exp_bce' p_t = exp(-BCE) "
            "(smp, pytorch-toolbelt); 'logit' 1 - p_t = sigmoid(-x(2t-1)) (MONAI).",
            choices=_FOCAL_FORMS,
        ),
        Param(
            "from_logits",
            "bool",
            True,
            "false: input holds probabilities, clamped to [eps, 1 - eps] and turned "
            "into logits (smp's from_logits=False).",
        ),
        Param(
            "eps",
            "float",
            1e-7,
            "The clamp of probabilities when from_logits is false (above 0: the logit of 0 or 1 is infinite).",
            min=0.0,
            min_exclusive=True,
            max=0.5,
            max_exclusive=True,
        ),
        Param(
            "ignore_index",
            "int",
            None,
            "Target value whose elements are left out ('mean' divides by the rest); null: none.",
            nullable=True,
        ),
        Param(
            "pos_weight",
            "float_list",
            None,
            "Per class (dim 1): multiplies the positive term (kornia's pos_weight, torch's BCE pos_weight).",
            nullable=True,
        ),
        Param(
            "weight",
            "float_list",
            None,
            "Per class (dim 1): multiplies the loss (kornia's weight, MONAI's weight).",
            nullable=True,
        ),
        Param(
            "label_smoothing",
            "float",
            0.0,
            "Targets become t(1 - s) + (1 - t)s (smp's and pytorch-toolbelt's SoftBCEWithLogitsLoss smooth_factor).",
            min=0.0,
            max=1.0,
            max_exclusive=True,
        ),
        Param(
            "normalized",
            "bool",
            False,
            "Divide by the sum of the focal factors (smp; Lin et al.'s normalized focal loss, arXiv:1909.07829).",
        ),
        Param(
            "reduced_threshold",
            "float",
            None,
            "Reduced focal loss (arXiv:1903.01347, smp): factor "
            "((1-p_t)/threshold)^γ, 1 where p_t < threshold. null: off.",
            min=0.0,
            max=1.0,
            min_exclusive=True,
            nullable=True,
        ),
        Param(
            "class_alpha",
            "float_list",
            None,
            "Per class (dim 1): multiplies the loss of elements whose target is exactly 1, others weigh 1 "
            "(MONAI FocalLoss with a sequence alpha, soft targets too). Replaces alpha: send alpha -1. null: off.",
            nullable=True,
        ),
        Param(
            "average_space",
            "bool",
            False,
            "With reduction 'sum': average each (sample, class) over its spatial elements (dims 2 on; with "
            "ignore_index, over its kept ones) before summing (MONAI FocalLoss reduction='sum').",
        ),
        Param(
            "mode",
            "string",
            "binary",
            "'binary' and 'multilabel': target shaped like input, elementwise; 'multiclass': target holds class "
            "indices (N, *), one-hot over dim 1 of input, ignore_index leaves a pixel out of every class (smp's and "
            "pytorch-toolbelt's mode='multiclass': a binary focal term per class).",
            choices=("binary", "multilabel", "multiclass"),
        ),
        Param(
            "activation",
            "string",
            "sigmoid",
            "Where the focal factor's probability comes from: 'sigmoid' of each logit, or 'softmax' over dim 1 "
            "(pytorch-toolbelt's activation='softmax' and its FocalLoss / CrossEntropyFocalLoss); the cross-entropy "
            "term stays BCE with logits. 'softmax' needs focal_form 'linear'.",
            choices=("sigmoid", "softmax"),
        ),
    ),
    description="Focal loss on logits (torchvision.ops.sigmoid_focal_loss; RetinaNet).",
    source="torchvision.ops.sigmoid_focal_loss (formula); kornia, smp, MONAI variants as parameters",
    example=_sigmoid_example,
    equivalents=(
        Equivalent("torchvision.ops.sigmoid_focal_loss(inputs, targets, reduction='mean')", {}, ""),
        Equivalent(
            "kornia.losses.binary_focal_loss_with_logits(pred, target, alpha=0.25, gamma=2.0, "
            "reduction='mean', pos_weight=pw)",
            {"focal_form": "split", "ignore_index": -100, "pos_weight": [2.0, 0.5, 1.0]},
            "pred and target (N, C, *); pos_weight = pw",
        ),
        Equivalent("pytorch_toolbelt.losses.BinaryFocalLoss()", {"alpha": -1.0, "focal_form": "exp_bce"}, ""),
        Equivalent(
            "segmentation_models_pytorch.losses.FocalLoss(mode='binary')", {"alpha": -1.0, "focal_form": "exp_bce"}, ""
        ),
        Equivalent(
            "segmentation_models_pytorch.losses.FocalLoss(mode='multilabel', alpha=0.25, from_logits=False, "
            "normalized=True)",
            {"focal_form": "exp_bce", "from_logits": False, "normalized": True},
            "smp averages each class's mean; equal to the mean over all elements",
        ),
        Equivalent(
            "segmentation_models_pytorch.losses.FocalLoss(mode='binary', reduced_threshold=0.5, reduction='sum')",
            {"alpha": -1.0, "focal_form": "exp_bce", "reduced_threshold": 0.5, "reduction": "sum"},
            "",
        ),
        Equivalent(
            "segmentation_models_pytorch.losses.SoftBCEWithLogitsLoss(smooth_factor=0.1, pos_weight=pw)",
            {"gamma": 0.0, "alpha": -1.0, "label_smoothing": 0.1, "pos_weight": [2.0, 0.5, 1.0]},
            "pw shaped (C, 1, …) so it is per class; pytorch-toolbelt's SoftBCEWithLogitsLoss too; with "
            "ignore_index they average over every element: reduction 'sum' with weight = 1 / elements",
        ),
        Equivalent("monai.losses.FocalLoss(gamma=2.0, alpha=0.25)", {"focal_form": "logit"}, ""),
        Equivalent(
            "monai.losses.FocalLoss(gamma=2.0, alpha=[0.25, 0.5, 0.75])",
            {"focal_form": "logit", "alpha": -1.0, "class_alpha": [0.25, 0.5, 0.75]},
            "soft targets too: MONAI's per-class alpha weighs the elements whose target is exactly 1",
        ),
        Equivalent(
            "monai.losses.FocalLoss(gamma=2.0, alpha=0.25, reduction='sum')",
            {"focal_form": "logit", "reduction": "sum", "average_space": True},
            "input and target (N, C, *spatial): MONAI's sum averages space first",
        ),
        Equivalent(
            "monai.losses.FocalLoss(gamma=2.0, weight=w)",
            {"focal_form": "logit", "alpha": -1.0, "weight": [1.0, 2.0, 0.5]},
            "weight = w",
        ),
        Equivalent(
            "monai.losses.FocalLoss(gamma=2.0, reduction='sum')",
            {"focal_form": "logit", "alpha": -1.0, "reduction": "sum", "weight": [0.25, 0.25, 0.25]},
            "or average_space true; without it, weight = 1 / pixels per class (here 4 pixels, 3 classes)",
        ),
        Equivalent(
            "segmentation_models_pytorch.losses.FocalLoss(mode='multilabel', class_weights=w)",
            {"alpha": -1.0, "focal_form": "exp_bce", "weight": [0.5, 1.5, 1.0]},
            "smp's Σ w·(class mean) / Σ w: weight = w · C / Σ w (here w = [1, 3, 2])",
        ),
        Equivalent(
            "kornia.losses.BinaryFocalLossWithLogits(alpha=0.25)",
            {"focal_form": "split", "ignore_index": -100, "reduction": "none"},
            "kornia's defaults: per element, -100 ignored (its loss there is 0)",
        ),
        Equivalent(
            "segmentation_models_pytorch.losses.FocalLoss(mode='multiclass', ignore_index=255)",
            {"mode": "multiclass", "ignore_index": 255, "alpha": -1.0, "focal_form": "exp_bce"},
            "input (N, C, *) logits, target (N, *) class indices; smp's mean of the class means over the kept pixels",
        ),
        Equivalent(
            "pytorch_toolbelt.losses.FocalLoss(ignore_index=-1)",
            {"mode": "multiclass", "activation": "softmax", "alpha": -1.0, "ignore_index": -1, "reduction": "sum",
             "weight": [0.125, 0.125, 0.125]},
            "toolbelt 0.8's FocalLoss is CrossEntropyFocalLoss; its mean divides by every pixel, ignored ones "
            "included: reduction 'sum' with weight = 1 / (N·pixels) per class (here 2·2·2)",
        ),
        Equivalent(
            "pytorch_toolbelt.losses.BinaryFocalLoss(ignore_index=-1)",
            {"mode": "multiclass", "alpha": -1.0, "ignore_index": -1, "reduction": "sum", "weight": [0.0625] * 2},
            "target (N, *) class indices, one-hot by toolbelt; its mean divides by every element, ignored ones "
            "included: reduction 'sum' with weight = 1 / (N·C·pixels) (here 2·2·4)",
        ),
        Equivalent(
            "kornia.losses.binary_focal_loss_with_logits(pred, target, alpha=0.25, gamma=2.0, reduction='mean')",
            {"focal_form": "split", "ignore_index": -100, "reduction": "sum", "weight": [0.125, 0.125]},
            "kornia's mean counts ignored (-100) elements: reduction 'sum' with weight = 1 / elements (here 8)",
        ),
    ),
)
def sigmoid_focal_loss(input: torch.Tensor, target: torch.Tensor, *, alpha: float, gamma: float, reduction: str,
                       focal_form: str, from_logits: bool, eps: float, ignore_index: int | None,
                       pos_weight: list[float] | None, weight: list[float] | None, label_smoothing: float,
                       normalized: bool, reduced_threshold: float | None, class_alpha: list[float] | None,
                       average_space: bool, mode: str, activation: str) -> torch.Tensor:
    """``ce = BCEWithLogits(x, t)``, ``p = sigmoid(x)``, ``p_t = p*t + (1-p)*(1-t)``;
    loss = ``ce * (1-p_t)^gamma``, times ``alpha*t + (1-alpha)*(1-t)`` when ``alpha >= 0``.

    With ``gamma=0`` and ``alpha<0`` this is exactly ``binary_cross_entropy_with_logits``.
    The other forms, weights, ``ignore_index`` and the smp options are in the parameter docs.
    """
    keep = None
    if mode == "multiclass":
        target, keep = _one_hot_classes(input, target, ignore_index)
    else:
        require_same_shape(input, target, "the loss is elementwise")
        if ignore_index is not None:
            keep = target != ignore_index
            target = torch.where(keep, target, torch.zeros_like(target))
    if activation == "softmax":
        require(input.dim() >= 2, "params.activation",
                f"'softmax' needs input (N, C, *), got shape {list(input.shape)}")
        require(focal_form == "linear", "params.activation", "'softmax' needs focal_form 'linear' (its p_t formula)")
        require(from_logits, "params.activation", "'softmax' needs from_logits true (logits over dim 1)")
    require_unit_interval(
        target, "inputs.target", "labels" + (f" (other than ignore_index {ignore_index})" if keep is not None else "")
    )
    require(not (focal_form == "split" and (normalized or reduced_threshold is not None)), "params.focal_form",
            "'split' has no single focal factor: normalized and reduced_threshold need another form")
    require(class_alpha is None or alpha < 0, "params.class_alpha", "replaces the scalar alpha: send alpha -1 with it")
    require(not average_space or reduction == "sum", "params.average_space", "needs reduction 'sum'")
    require(not average_space or input.dim() >= 3, "params.average_space",
            f"needs input (N, C, *spatial) with at least one spatial dim, got shape {list(input.shape)}")
    ca = _class_vector(class_alpha, input, "params.class_alpha")
    if label_smoothing:
        target = target * (1 - label_smoothing) + (1 - target) * label_smoothing
    pw = _class_vector(pos_weight, input, "params.pos_weight")
    w = _class_vector(weight, input, "params.weight")
    simple = (keep is None and pw is None and w is None and ca is None and not normalized and reduced_threshold is None
              and from_logits and not average_space)
    if simple and gamma == 0 and alpha < 0:  # plain BCE-with-logits: let torch reduce, so grads match it bit for bit
        return F.binary_cross_entropy_with_logits(input, target, reduction=reduction)
    x = input
    if not from_logits:
        require(
            bool(((input >= 0) & (input <= 1)).all()),
            "inputs.input",
            "probabilities must lie in [0, 1] (from_logits=false)",
        )
        # float32 for half types: 1 - 1e-7 rounds to 1 there, and the logit of 1 is inf (NaN loss at p = 1)
        p = widened(input).clamp(eps, 1 - eps)
        x = torch.log(p / (1 - p)).to(input.dtype)
    focal: torch.Tensor | None = None
    if focal_form == "split":
        log_p, log_1mp = F.logsigmoid(x), F.logsigmoid(-x)
        pos = -modulating_factor(torch.exp(log_1mp), gamma) * target * log_p
        neg = -modulating_factor(torch.exp(log_p), gamma) * (1 - target) * log_1mp
        if alpha >= 0:
            pos, neg = alpha * pos, (1 - alpha) * neg
        loss = (pos if pw is None else pw * pos) + neg
    else:
        loss = F.binary_cross_entropy_with_logits(x, target, reduction="none", pos_weight=pw)
        if gamma != 0 or reduced_threshold is not None or normalized:
            if focal_form == "linear":  # 1 - p_t without cancellation: p + t - 2pt
                p = torch.softmax(x, dim=1) if activation == "softmax" else torch.sigmoid(x)
                q = (p + target - 2 * p * target).clamp_min(0)
            elif focal_form == "exp_bce":
                bce = loss if pw is None else F.binary_cross_entropy_with_logits(x, target, reduction="none")
                q = -torch.expm1(-bce)
            else:
                q = torch.sigmoid(-x * (2 * target - 1))
            if reduced_threshold is None:
                focal = modulating_factor(q, gamma)
            else:
                focal = torch.where(1 - q < reduced_threshold, torch.ones_like(q),
                                    modulating_factor(q / reduced_threshold, gamma))
            loss = loss * focal
        if alpha >= 0:
            loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    if ca is not None:
        loss = torch.where(target == 1, ca * loss, loss)
    if w is not None:
        loss = w * loss
    if keep is not None:
        loss = torch.where(keep, loss, torch.zeros_like(loss))
    if normalized:
        assert focal is not None
        kept_focal = focal if keep is None else torch.where(keep, focal, torch.zeros_like(focal))
        loss = loss / kept_focal.sum().clamp_min(1e-6)
    if reduction == "mean" and keep is not None:
        return loss.sum() / keep.sum()
    if average_space:
        space = tuple(range(2, loss.dim()))
        if keep is None:
            return loss.mean(space).sum()
        return (loss.sum(space) / keep.sum(space).clamp_min(1)).sum()
    return reduce(loss, reduction)


def _one_hot_classes(input: torch.Tensor, target: torch.Tensor, ignore_index: int | None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class indices (N, *) → (one-hot shaped like input, kept elements or None); ignored pixels: every class."""
    require(input.dim() >= 2, "inputs.input", f"mode 'multiclass' needs input (N, C, *), got shape {list(input.shape)}")
    require(not (target.is_floating_point() or target.is_complex() or target.dtype == torch.bool), "inputs.target",
            f"mode 'multiclass' takes class indices (an integer dtype), got {str(target.dtype).replace('torch.', '')}")
    expected = [input.shape[0], *input.shape[2:]]
    require(list(target.shape) == expected, "inputs.target", f"shape {list(target.shape)} must be {expected} "
            "(class indices for input (N, C, *))")
    target = target.long()
    require_class_indices(target, input.shape[1], ignore_index)
    keep = None
    if ignore_index is not None:
        kept = target != ignore_index
        target = torch.where(kept, target, torch.zeros_like(target))
        keep = kept.unsqueeze(1).expand(input.shape)
    return F.one_hot(target, input.shape[1]).movedim(-1, 1).to(input.dtype), keep


register_split_name("FocalLoss", "sigmoid_focal_loss (logits, one probability per element: torchvision, smp, "
                    "MONAI; smp mode='multiclass': mode 'multiclass'; pytorch-toolbelt 0.8's FocalLoss, which is its "
                    "CrossEntropyFocalLoss: mode 'multiclass', activation 'softmax'), softmax_focal_loss (logits over "
                    "classes, class-index targets: kornia) or binary_focal_loss (probabilities, the seed's FocalLoss)")
register_split_name("focal", "sigmoid_focal_loss (logits, one probability per element: torchvision, smp, "
                    "pytorch-toolbelt, MONAI), softmax_focal_loss (logits over classes, class-index targets: kornia) "
                    "or binary_focal_loss (probabilities, the seed's FocalLoss)")
# kornia's names: the same loss as sigmoid_focal_loss, with other defaults (per element, -100 ignored, kornia's
# soft-target form); the alias would have given other numbers for soft targets, silently.
for _name in ("BinaryFocalLossWithLogits", "binary_focal_loss_with_logits"):
    register_split_name(_name, "sigmoid_focal_loss with focal_form 'split', ignore_index -100 and reduction 'none' "
                        "(kornia's defaults; alpha 0.25 and gamma 2 are the same)")
register_split_name("multiclass_focal_loss", "softmax_focal_loss (softmax cross-entropy form: kornia focal_loss, "
                    "MONAI use_softmax) or sigmoid_focal_loss with mode 'multiclass' (a binary focal term per class: "
                    "smp FocalLoss(mode='multiclass'); pytorch-toolbelt's with activation 'softmax')")
register_split_name("CrossEntropyFocalLoss", "sigmoid_focal_loss with mode 'multiclass', activation 'softmax', "
                    "alpha -1 (pytorch-toolbelt's CrossEntropyFocalLoss: softmax focal factor, per-class BCE, summed "
                    "over classes), or softmax_focal_loss (the softmax cross-entropy form, kornia)")
register_split_name("BinaryFocalLoss", "sigmoid_focal_loss (logits: pytorch-toolbelt BinaryFocalLoss; with "
                    "focal_form 'exp_bce', alpha -1) or binary_focal_loss (probabilities, the seed's FocalLoss)")
register_split_name("focal_loss", "sigmoid_focal_loss (torchvision.ops.sigmoid_focal_loss) or softmax_focal_loss "
                    "(kornia.losses.focal_loss)")


def _softmax_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0]], dtype=dt),
        "target": torch.tensor([0, 2, 1]),
    }


@register_loss(
    "softmax_focal_loss",
    refuses=(
        "an input without a class dimension (N, C, *)",
        "targets not shaped (N, *)",
        "class indices outside [0, C) other than ignore_index",
        "an alpha not shaped (C)",
        "gamma < 0",
    ),
    mean_normalizer="weight",  # 'mean' divides by the total class weight of the samples kept
    aliases=("SoftmaxFocalLoss",),
    inputs=(
        Input(
            "input", "prediction", differentiable=True, aliases=("y_pred",), doc="logits, (N, C) or (N, C, d1, ..., dK)"
        ),
        Input("target", "target", kind="int", aliases=("y_true",), doc="class indices, (N) or (N, d1, ..., dK)"),
        Input("alpha", "class weight", required=False, doc="weight per class, shape (C)"),
    ),
    params=(
        _GAMMA,
        Param("ignore_index", "int", -100, "Target value that is ignored (no loss, no gradient)."),
        Param(
            "reduction",
            "string",
            "mean",
            "'none', 'mean' (over non-ignored elements) or 'sum'.",
            choices=("none", "mean", "sum"),
        ),
    ),
    description="Multi-class focal loss on logits: -alpha[t] * (1 - p_t)^gamma * log p_t.",
    source="lossd (Lin et al. 2017, softmax form)",
    example=_softmax_example,
    equivalents=(
        Equivalent(
            "kornia.losses.focal_loss(pred, target, alpha=None, gamma=2.0, reduction='sum')", {"reduction": "sum"}, ""
        ),
        Equivalent(
            "kornia.losses.focal_loss(pred, target, alpha=0.5, weight=w, reduction='mean')",
            {},
            "kornia's mean divides by N·C·pixels: send input alpha = [1 - 0.5, 0.5, …] · w / C",
        ),
        Equivalent(
            "monai.losses.FocalLoss(use_softmax=True, to_onehot_y=True, gamma=2.0)",
            {},
            "MONAI's mean divides by N·C·pixels: send input alpha = [1/C, …, 1/C]",
        ),
    ),
)
def softmax_focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    alpha: torch.Tensor | None,
    *,
    gamma: float,
    ignore_index: int,
    reduction: str,
) -> torch.Tensor:
    """``logp = log_softmax(x, dim=1)``; per element ``-alpha[t] * (1 - exp(logp_t))^gamma * logp_t``,
    zero where ``t == ignore_index``. 'mean' divides by the number of non-ignored elements.
    """
    require(input.dim() >= 2, "inputs.input", f"must be (N, C) or (N, C, d1, ...), got shape {list(input.shape)}")
    n_classes = input.shape[1]
    expected = [input.shape[0], *input.shape[2:]]
    require(list(target.shape) == expected, "inputs.target", f"shape {list(target.shape)} must be {expected}")
    require_class_indices(target, n_classes, ignore_index)
    keep = target != ignore_index
    if alpha is not None:
        require(list(alpha.shape) == [n_classes], "inputs.alpha", f"shape {list(alpha.shape)} must be [{n_classes}]")
    safe_target = torch.where(keep, target, torch.zeros_like(target))
    logp_t = F.log_softmax(input, dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
    loss = -modulating_factor(-torch.expm1(logp_t), gamma) * logp_t
    if alpha is not None:
        loss = alpha[safe_target] * loss
    loss = torch.where(keep, loss, torch.zeros_like(loss))
    if reduction == "mean":
        return loss.sum() / keep.sum()
    return reduce(loss, reduction)
