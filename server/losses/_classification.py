"""Classification losses from ``torch.nn``: cross entropy, NLL, BCE, KL, margin losses.

Each entry calls torch's own functional, so values and gradients are bit-identical
to local torch. What torch leaves unchecked splits in two (seen on torch 2.13 CPU).
Refused (kind b): class indices out of range (torch reads out of bounds or fails
late) and an empty batch for multi_margin_loss / multilabel_margin_loss, where torch
reduces uninitialised memory. Computed as torch does, with a warning, refused when
the request is strict (kind a, :class:`~._registry.Domain`): probability / label
targets outside [0, 1], soft-margin targets other than +-1, targets shaped unlike
the input where torch broadcasts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._registry import (
    REDUCTION,
    Domain,
    Input,
    Param,
    class_indices,
    in_unit_interval,
    param_bound,
    register_loss,
    require,
    require_class_indices,
    require_same_shape,
    require_unit_interval,
    same_shape,
    unit_interval,
)

__all__ = ["SIGNS", "SMOOTHING"]


# --------------------------------------------------------------------------- shared checks


def _n_classes(input: torch.Tensor) -> int:
    """C for inputs shaped (C), (N, C) or (N, C, d1, ..., dK); a 0-dim input counts as one class."""
    if input.dim() == 0:
        return 1
    return input.shape[1] if input.dim() > 1 else input.shape[0]


_CLASS_INDEX = "class indices outside [0, C) other than ignore_index (torch reads out of bounds or fails late)"


def _class_targets(input: torch.Tensor, target: torch.Tensor, ignore_index: int | None) -> None:
    """Class-index targets must lie in [0, C) (or equal ignore_index), C taken from the input."""
    require_class_indices(target, _n_classes(input), ignore_index)


def _class_weight(input: torch.Tensor, weight: torch.Tensor | None, field: str = "inputs.weight") -> None:
    """A per-class weight has shape (C)."""
    if weight is not None:
        n_classes = _n_classes(input)
        require(weight.dim() == 1 and weight.shape[0] == n_classes, field,
                f"must have shape [{n_classes}] (one weight per class), got {list(weight.shape)}")






def _broadcasts_to(t: torch.Tensor | None, input: torch.Tensor, field: str, usual: str) -> None:
    if t is None:
        return
    try:
        ok = torch.broadcast_shapes(t.shape, input.shape) == input.shape
    except RuntimeError:
        ok = False
    require(ok, field, f"must broadcast to the input's shape {list(input.shape)} (usually {usual}), "
                       f"got {list(t.shape)}")


def _nonempty_batch(input: torch.Tensor, reduction: str, name: str) -> None:
    require(
        reduction == "none" or input.dim() < 2 or input.shape[0] > 0,
        "inputs.input",
        f"has an empty batch (shape {list(input.shape)}); {name} with reduction {reduction!r} would return "
        "uninitialised memory on torch's CPU kernel, so it is refused (reduction 'none' returns an empty loss)",
    )


# --------------------------------------------------------------------------- cross entropy, NLL


def _ce_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]], dtype=dt),
        "target": torch.tensor([0, 2]),
    }


_CE_PROBS = unit_interval(what="class probabilities")
#: torch refuses label_smoothing > 1; a negative one it computes as 0 (no smoothing).
SMOOTHING = param_bound("label_smoothing", "label_smoothing >= 0",
                        "torch computes a negative smoothing as 0: no smoothing")
_IGNORE_INDEX = Param("ignore_index", "int", -100,
                      "Class-index target value that is ignored and does not count towards the mean.")


@register_loss(
    "cross_entropy",
    mean_normalizer="weight",  # 'mean' divides by the total class weight of the samples kept
    aliases=("CrossEntropyLoss", "ce", "softmax_cross_entropy"),
    inputs=(
        Input(
            "input",
            "prediction",
            differentiable=True,
            aliases=("y_pred",),
            doc="unnormalized logits, (C), (N, C) or (N, C, d1, ..., dK)",
        ),
        Input(
            "target",
            "target",
            kind="float|int",
            differentiable=True,
            aliases=("y_true",),
            doc="class indices (int, shape (), (N) or (N, d1, ..., dK)) or class probabilities "
            "(float in [0, 1], same shape as input)",
        ),
        Input("weight", "class weight", required=False, doc="rescaling weight per class, shape (C)"),
    ),
    params=(
        REDUCTION,
        _IGNORE_INDEX,
        Param("label_smoothing", "float", 0.0, "Amount of smoothing towards the uniform distribution.", max=1.0),
    ),
    description="Cross entropy between logits and class indices or class probabilities.",
    source="torch.nn.functional.cross_entropy",
    legacy_reduction=True,
    notes="ignore_index applies to class-index targets only: with probability targets it has no effect, and "
    "one >= 0 is refused (as torch refuses it). "
    "With class-index targets the weighted 'mean' divides by the sum of the targets' weights.",
    example=_ce_example,
    domain=(_CE_PROBS, SMOOTHING),
    refuses=(_CLASS_INDEX, "a weight not shaped (C)", "probability targets shaped unlike the input"),
)
def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    *,
    reduction: str,
    ignore_index: int,
    label_smoothing: float,
) -> torch.Tensor:
    r"""``l_n = -sum_c w_c y_{n,c} log softmax(x_n)_c``; class indices: ``-w_{y_n} log softmax(x_n)_{y_n}``.

    With label smoothing ``e`` the targets become ``(1 - e) y + e / C``.
    Shapes: input (C), (N, C) or (N, C, d1..dK); target (), (N) or (N, d1..dK) of
    class indices, or the input's shape of probabilities; weight (C).
    """
    _class_weight(input, weight)
    SMOOTHING.check(label_smoothing >= 0)
    if target.is_floating_point():
        require_same_shape(input, target, "class-probability targets have one probability per class")
        _CE_PROBS.check(((target >= 0) & (target <= 1)).all())
        require(ignore_index < 0, "params.ignore_index",
                f"is {ignore_index}; it applies to class-index targets only, and torch refuses one >= 0 "
                "with class-probability targets")
    else:
        target = class_indices(target)  # torch takes int64 or uint8 class indices; lossd any integer dtype
        _class_targets(input, target, ignore_index)
    return F.cross_entropy(input, target, weight, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)


def _nll_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.log_softmax(torch.tensor([[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]], dtype=torch.float64), 1).to(dt),
        "target": torch.tensor([0, 2]),
    }


@register_loss(
    "nll_loss",
    mean_normalizer="weight",  # 'mean' divides by the total class weight of the samples kept
    aliases=("NLLLoss", "nll"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",),
              doc="log-probabilities, (C), (N, C) or (N, C, d1, ..., dK)"),
        Input("target", "target", kind="int", aliases=("y_true",),
              doc="class indices in [0, C), shape (), (N) or (N, d1, ..., dK)"),
        Input("weight", "class weight", required=False, doc="rescaling weight per class, shape (C)"),
    ),
    params=(REDUCTION, _IGNORE_INDEX),
    description="Negative log-likelihood of class indices given log-probabilities.",
    source="torch.nn.functional.nll_loss",
    legacy_reduction=True,
    notes="The weighted 'mean' divides by the sum of the targets' weights.",
    example=_nll_example,
    refuses=(_CLASS_INDEX, "a weight not shaped (C)"),
)
def nll_loss(
    input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, *, reduction: str, ignore_index: int
) -> torch.Tensor:
    r"""``l_n = -w_{y_n} x_{n, y_n}`` (0 where ``y_n == ignore_index``); 'mean' divides by ``sum_n w_{y_n}``.

    Shapes: input (C), (N, C) or (N, C, d1..dK); target (), (N) or (N, d1..dK); weight (C).
    """
    _class_weight(input, weight)
    _class_targets(input, target, ignore_index)
    return F.nll_loss(input, target, weight, ignore_index=ignore_index, reduction=reduction)


# --------------------------------------------------------------------------- binary cross entropy


_BCE_TARGETS = unit_interval(what="targets")


def _bce_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.7, 0.5]], dtype=dt),
        "target": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.25]], dtype=dt),
    }


@register_loss(
    "binary_cross_entropy",
    aliases=("BCELoss", "bce"),
    inputs=(
        Input(
            "input", "prediction", differentiable=True, aliases=("y_pred",), doc="probabilities in [0, 1], any shape"
        ),
        Input(
            "target",
            "target",
            differentiable=True,
            aliases=("y_true",),
            doc="labels or probabilities in [0, 1], same shape as input",
        ),
        Input("weight", "element weight", required=False, doc="rescaling weight, broadcastable to the input's shape"),
    ),
    params=(REDUCTION,),
    description="Binary cross entropy between predicted probabilities and targets in [0, 1].",
    source="torch.nn.functional.binary_cross_entropy",
    legacy_reduction=True,
    notes="Log terms are clamped at -100, as in torch.",
    example=_bce_example,
    refuses=("input probabilities or targets outside [0, 1] (torch's own errors)", "a target shaped unlike the "
             "input (torch's own error)", "a weight that does not broadcast to the input"),
)
def binary_cross_entropy(
    input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, *, reduction: str
) -> torch.Tensor:
    r"""``l_i = -w_i (y_i log x_i + (1 - y_i) log(1 - x_i))``, logs clamped at -100.

    Shapes: input (*), target (*) the same, weight broadcastable to them.
    """
    require_same_shape(input, target, "torch refuses a different shape")
    require_unit_interval(input, "inputs.input", "probabilities")
    require_unit_interval(target, "inputs.target", "targets")
    _broadcasts_to(weight, input, "inputs.weight", "the input's shape")
    return F.binary_cross_entropy(input, target, weight, reduction=reduction)


def _bce_logits_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.0, 0.0]], dtype=dt),
        "target": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.25]], dtype=dt),
    }


@register_loss(
    "binary_cross_entropy_with_logits",
    broadcasts=("input", "weight", "pos_weight"),
    aliases=("BCEWithLogitsLoss", "bce_with_logits", "bce_logits"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="logits, any shape"),
        Input("target", "target", differentiable=True, aliases=("y_true",),
              doc="labels or probabilities in [0, 1], same shape as input"),
        Input("weight", "element weight", required=False, doc="rescaling weight, broadcastable to the input's shape"),
        Input("pos_weight", "positive-class weight", required=False,
              doc="weight of positive examples per class, broadcastable to the input's shape (usually (C))"),
    ),
    params=(REDUCTION,),
    description="Sigmoid plus binary cross entropy in one numerically stable step, with pos_weight.",
    source="torch.nn.functional.binary_cross_entropy_with_logits",
    legacy_reduction=True,
    example=_bce_logits_example,
    domain=(_BCE_TARGETS,),
    refuses=("a target shaped unlike the input (torch's own error)",
             "a weight or pos_weight that does not broadcast to the input"),
)
def binary_cross_entropy_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    pos_weight: torch.Tensor | None,
    *,
    reduction: str,
) -> torch.Tensor:
    r"""``l_i = -w_i (p_i y_i log sigmoid(x_i) + (1 - y_i) log(1 - sigmoid(x_i)))``, ``p`` = pos_weight.

    Shapes: input (*), target (*) the same; weight and pos_weight broadcastable to them.
    """
    require_same_shape(input, target, "torch refuses a different shape")
    _BCE_TARGETS.check(in_unit_interval(target))
    _broadcasts_to(weight, input, "inputs.weight", "the input's shape")
    _broadcasts_to(pos_weight, input, "inputs.pos_weight", "(C), one weight per class")
    return F.binary_cross_entropy_with_logits(input, target, weight, reduction=reduction, pos_weight=pos_weight)


# --------------------------------------------------------------------------- KL divergence


def _kl_example(dt: torch.dtype) -> dict[str, object]:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]], dtype=torch.float64)
    return {
        "input": torch.log_softmax(logits, 1).to(dt),
        "target": torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]], dtype=dt),
        "params": {"reduction": "batchmean"},
    }


@register_loss(
    "kl_div",
    broadcasts=("input", "target"),
    aliases=("KLDivLoss", "kl", "kl_div_loss"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="log-probabilities, any shape"),
        Input("target", "target", differentiable=True, aliases=("y_true",),
              doc="probabilities (or log-probabilities with log_target), same shape as input"),
    ),
    params=(
        Param("reduction", "string", "mean",
              "'batchmean' (sum / batch size: the KL divergence), 'sum', 'mean' (over all elements) or 'none'.",
              choices=("none", "batchmean", "sum", "mean")),
        Param("log_target", "bool", False, "The target is given as log-probabilities."),
    ),
    description="Kullback-Leibler divergence KL(target || exp(input)), pointwise, reduced.",
    source="torch.nn.functional.kl_div",
    legacy_reduction=True,
    notes="'mean' divides by the number of elements; 'batchmean' (the KL divergence) by the batch size. "
          "torch warns that 'mean' is not the KL divergence; the warning reaches the caller.",
    example=_kl_example,
    domain=(same_shape(torch_warns=False),),
    refuses=("shapes that do not broadcast (torch's own error)",),
)
def kl_div(input: torch.Tensor, target: torch.Tensor, *, reduction: str, log_target: bool) -> torch.Tensor:
    r"""``l_i = y_i (log y_i - x_i)``, or ``exp(y_i) (y_i - x_i)`` with log_target.

    Shapes: input (*), target (*) the same.
    """
    same_shape(torch_warns=False).check(target.shape == input.shape)
    return F.kl_div(input, target, reduction=reduction, log_target=log_target)


# --------------------------------------------------------------------------- margin losses


_LABELS = unit_interval(what="labels")
_MLSM_SHAPE = same_shape(torch_warns=False)


def _mlsm_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.0, 0.0]], dtype=dt),
        "target": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=dt),
    }


@register_loss(
    "multilabel_soft_margin_loss",
    broadcasts=("input", "target"),
    aliases=("MultiLabelSoftMarginLoss", "multilabel_soft_margin"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="logits, (N, C)"),
        Input("target", "target", kind="float|int", differentiable=True, aliases=("y_true",),
              doc="0/1 labels (float or int) per class, same shape as input"),
        Input("weight", "class weight", differentiable=True, required=False,
              doc="rescaling weight per class, broadcastable to the input's shape (usually (C))"),
    ),
    params=(REDUCTION,),
    description="Multi-label one-versus-all logistic loss, averaged over classes.",
    source="torch.nn.functional.multilabel_soft_margin_loss",
    legacy_reduction=True,
    example=_mlsm_example,
    domain=(_LABELS, _MLSM_SHAPE),
    refuses=("a 0-d input (no class dimension)", "a target that does not broadcast (torch's own error)",
             "a weight that does not broadcast to the input"),
)
def multilabel_soft_margin_loss(
    input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, *, reduction: str
) -> torch.Tensor:
    r"""``l_n = -(1/C) sum_c w_c (y_{nc} log sigmoid(x_{nc}) + (1 - y_{nc}) log sigmoid(-x_{nc}))``.

    Shapes: input (N, C), target (N, C), weight (C); 'none' gives (N).
    """
    require(input.dim() >= 1, "inputs.input", "must have a class dimension: shape (N, C) or (C)")
    _MLSM_SHAPE.check(target.shape == input.shape)
    _LABELS.check(in_unit_interval(target))
    _broadcasts_to(weight, input, "inputs.weight", "(C), one weight per class")
    return F.multilabel_soft_margin_loss(input, target, weight, reduction=reduction)


def _mlm_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[0.1, 0.2, 0.4, 0.8], [0.5, -0.3, 0.2, 0.0]], dtype=dt),
        "target": torch.tensor([[3, 0, -1, 1], [1, 2, 3, -1]]),
    }


@register_loss(
    "multilabel_margin_loss",
    aliases=("MultiLabelMarginLoss", "multilabel_margin"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="scores, (C) or (N, C)"),
        Input("target", "target", kind="int", aliases=("y_true",),
              doc="class indices of each sample's labels, padded with -1, same shape as input"),
    ),
    params=(REDUCTION,),
    description="Multi-label hinge loss between every target class and every non-target class.",
    source="torch.nn.functional.multilabel_margin_loss",
    legacy_reduction=True,
    notes="Only the labels before the first -1 of each row count. An empty batch is refused "
          "unless reduction is 'none' (torch's CPU kernel returns uninitialised memory). "
          "float16/bfloat16: torch's CPU kernel has none (UNIMPLEMENTED on a CPU server).",
    example=_mlm_example,
    refuses=("a target shaped unlike the input", "labels outside [0, C) other than the -1 padding "
             "(torch reads out of bounds)", "an empty batch with reduction 'mean' or 'sum' (uninitialised memory)"),
)
def multilabel_margin_loss(input: torch.Tensor, target: torch.Tensor, *, reduction: str) -> torch.Tensor:
    r"""``l_n = sum_{j in labels, i not in labels} max(0, 1 - (x_{n,j} - x_{n,i})) / C``.

    Shapes: input (C) or (N, C); target the same, labels first, then -1; 'none' gives (N) or ().
    """
    n_classes = input.shape[-1] if input.dim() else 1
    require(target.shape == input.shape, "inputs.target",
            f"must have the input's shape (labels padded with -1): got {list(target.shape)} "
            f"for input {list(input.shape)}")
    require(bool(((target >= -1) & (target < n_classes)).all()), "inputs.target",
            f"labels must lie in [0, {n_classes}), padded with -1")
    _nonempty_batch(input, reduction, "multilabel_margin_loss")
    return F.multilabel_margin_loss(input, target, reduction=reduction)


def _mm_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[0.1, 0.2, 0.4, 0.8], [0.5, -0.3, 0.2, 0.0]], dtype=dt),
        "target": torch.tensor([3, 1]),
    }


@register_loss(
    "multi_margin_loss",
    aliases=("MultiMarginLoss", "multi_margin"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="scores, (C) or (N, C)"),
        Input("target", "target", kind="int", aliases=("y_true",), doc="class indices in [0, C), () or (N)"),
        Input("weight", "class weight", required=False, doc="rescaling weight per class, shape (C)"),
    ),
    params=(
        Param("p", "int", 1, "Exponent of the hinge: 1 or 2.", min=1, max=2),
        Param("margin", "float", 1.0, "The margin the target score must beat every other score by."),
        REDUCTION,
    ),
    description="Multi-class hinge loss (one target class per sample).",
    source="torch.nn.functional.multi_margin_loss",
    legacy_reduction=True,
    notes="An empty batch is refused unless reduction is 'none' (torch's CPU kernel returns uninitialised memory). "
          "float16/bfloat16: torch's CPU kernel has none (UNIMPLEMENTED on a CPU server).",
    example=_mm_example,
    refuses=(_CLASS_INDEX, "a weight not shaped (C)",
             "an empty batch with reduction 'mean' or 'sum' (uninitialised memory)"),
)
def multi_margin_loss(
    input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, *, p: int, margin: float, reduction: str
) -> torch.Tensor:
    r"""``l_n = sum_{i != y_n} w_{y_n} max(0, margin - x_{n,y_n} + x_{n,i})^p / C``.

    Shapes: input (C) or (N, C); target () or (N); weight (C); 'none' gives the target's shape.
    """
    _class_weight(input, weight)
    _class_targets(input, target, None)
    _nonempty_batch(input, reduction, "multi_margin_loss")
    return F.multi_margin_loss(input, target, p=p, margin=margin, weight=weight, reduction=reduction)


#: The (a) rule of the +-1 target losses (soft margin, hinge/cosine embedding, margin ranking).
SIGNS = Domain("inputs.target", "values are 1 or -1", "other values enter torch's formula as they are")


def _sm_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.0, 0.0]], dtype=dt),
        "target": torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]], dtype=dt),
    }


@register_loss(
    "soft_margin_loss",
    broadcasts=("input", "target"),
    aliases=("SoftMarginLoss", "soft_margin"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="scores, any shape"),
        Input("target", "target", kind="float|int", aliases=("y_true",), doc="labels +1 or -1, same shape as input"),
    ),
    params=(REDUCTION,),
    description="Two-class logistic loss log(1 + exp(-target * input)) with targets +-1.",
    source="torch.nn.functional.soft_margin_loss",
    legacy_reduction=True,
    example=_sm_example,
    domain=(SIGNS, same_shape(torch_warns=False)),
    refuses=("shapes that do not broadcast (torch's own error)",),
)
def soft_margin_loss(input: torch.Tensor, target: torch.Tensor, *, reduction: str) -> torch.Tensor:
    r"""``l_i = log(1 + exp(-y_i x_i))``.

    Shapes: input (*), target (*) the same.
    """
    same_shape(torch_warns=False).check(target.shape == input.shape)
    SIGNS.check(((target == 1) | (target == -1)).all())
    return F.soft_margin_loss(input, target, reduction=reduction)
