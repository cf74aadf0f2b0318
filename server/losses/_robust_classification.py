"""Classification losses for noisy or imbalanced labels, with pytorch-toolbelt's conventions: the
bi-tempered logistic loss (Amid et al. 2019) and balanced binary cross-entropy (Xie & Tu 2015).

The bi-tempered loss normalises the tempered exponential ``exp_t`` of the logits; that constant has
no closed form for ``t2 != 1``. It is found iteratively without autograd (a fixed point for
``t2 > 1``, a bisection for ``t2 < 1``, ``num_iters`` steps), and its gradient is the exact one of
the converged constant (implicit differentiation: the escort distribution ``p^t2 / Σ p^t2``), as
the paper's reference code and pytorch-toolbelt define it.

``log_t1(p)`` is computed from ``log p`` (``log_softmax`` for ``t2 == 1``, the tempered exponential's
own logarithm otherwise), never from ``p``: a true class whose probability underflows to 0 keeps a
finite loss and finite gradients (toolbelt's ``log_t(p)`` gives inf and NaN there). With
``t1 == t2 == 1`` and class indices (no smoothing) the loss is torch's ``cross_entropy``, bit for bit:

>>> import torch
>>> x, y = torch.tensor([[2.0, 0.5, -1.0], [-50.0, 50.0, 50.0]]), torch.tensor([0, 0])
>>> ce = torch.nn.functional.cross_entropy(x, y)
>>> torch.equal(bi_tempered_logistic_loss(x, y, t1=1.0, t2=1.0, label_smoothing=0.0, num_iters=5,
...             ignore_index=None, mode="multiclass", reduction="mean"), ce)
True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._dtypes import WIRE_NAMES
from ._registry import (
    REDUCTION,
    Equivalent,
    Input,
    Param,
    narrowed,
    register_loss,
    require,
    require_class_indices,
    widened,
)

__all__ = ["bi_tempered_logistic_loss", "balanced_binary_cross_entropy_with_logits", "tempered_softmax",
           "tempered_log_softmax"]


def _log_t(u: torch.Tensor, t: float) -> torch.Tensor:
    return u.log() if t == 1 else (u.pow(1 - t) - 1) / (1 - t)


def _log_t_of_log(log_u: torch.Tensor, t: float) -> torch.Tensor:
    """``log_t(u, t)`` from ``log u``: ``(u^(1-t) - 1) / (1 - t) = (exp((1-t)·log u) - 1) / (1 - t)``, finite (and
    of finite slope) where ``u`` underflows to 0 or is 0 (``log u = -inf``: ``-1 / (1 - t)``, slope 0) for ``t < 1``.
    ``exp(z) - 1`` rather than ``expm1(z)``: torch's derivative of ``expm1`` is ``expm1(z) + 1``, 0 once
    ``expm1(z)`` rounds to -1 (float32 from ``z < -17``), where the slope ``exp(z)`` is not.

    >>> _log_t_of_log(torch.tensor([0.0, float("-inf")]), 0.5).tolist()
    [0.0, -2.0]
    """
    return log_u if t == 1 else (torch.exp((1 - t) * log_u) - 1) / (1 - t)


def _exp_t(u: torch.Tensor, t: float) -> torch.Tensor:
    return u.exp() if t == 1 else torch.relu(1 + (1 - t) * u).pow(1 / (1 - t))


def _normalization(a: torch.Tensor, t: float, num_iters: int) -> torch.Tensor:
    """λ with Σ_c exp_t(a_c - λ) = 1 over dim 1, approximated in ``num_iters`` steps (no autograd)."""
    mu = a.amax(dim=1, keepdim=True)
    shifted = a - mu
    if t > 1:  # fixed point
        scaled = shifted
        for _ in range(num_iters):
            scaled = shifted * _exp_t(scaled, t).sum(1, keepdim=True).pow(1 - t)
        return mu - _log_t(1 / _exp_t(scaled, t).sum(1, keepdim=True), t)
    effective = (shifted > -1 / (1 - t)).sum(1, keepdim=True).to(a.dtype)  # bisection: finite support
    lower, upper = torch.zeros_like(mu), -_log_t(1 / effective, t)
    for _ in range(num_iters):
        middle = (lower + upper) / 2
        below = _exp_t(shifted - middle, t).sum(1, keepdim=True) < 1
        lower, upper = torch.where(below, lower, middle), torch.where(below, middle, upper)
    return mu + (lower + upper) / 2


def tempered_softmax(a: torch.Tensor, t: float, num_iters: int) -> torch.Tensor:
    """``exp_t(a - λ(a), t)`` over dim 1; ``dλ/da`` is the escort distribution (implicit function theorem).

    >>> [round(p, 6) for p in tempered_softmax(torch.tensor([[0.0, 0.0]]), 1.5, 5)[0].tolist()]
    [0.5, 0.5]
    """
    return tempered_log_softmax(a, t, num_iters)[0]


def tempered_log_softmax(a: torch.Tensor, t: float, num_iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(:func:`tempered_softmax`, its logarithm computed in log space): ``log_softmax`` for ``t == 1``, else
    ``log1p((1-t)(a - λ)) / (1 - t)``, ``-inf`` outside the finite support of ``t < 1`` (there ``p`` is 0).

    >>> p, log_p = tempered_log_softmax(torch.tensor([[0.0, -3000.0]]), 1.01, 5)  # p = 31^-100: 0 in float32
    >>> p[0, 1].item(), round(log_p[0, 1].item(), 2)
    (0.0, -343.4)
    """
    if t == 1:
        return a.softmax(dim=1), a.log_softmax(dim=1)
    with torch.no_grad():
        lam = _normalization(a, t, num_iters)
        escort = _exp_t(a - lam, t).pow(t)
        escort = escort / escort.sum(1, keepdim=True)
    lam = lam + (escort * (a - a.detach())).sum(1, keepdim=True)  # value λ, gradient the escort
    z = (1 - t) * (a - lam)
    probs = torch.relu(1 + z).pow(1 / (1 - t))  # _exp_t(a - lam, t)
    inside = z > -1  # t > 1: always (up to the normalization's approximation); t < 1: the support
    log_probs = torch.where(inside, torch.log1p(torch.where(inside, z, torch.zeros_like(z))) / (1 - t),
                            torch.full_like(z, float("-inf")))
    return probs, log_probs


@register_loss(
    "bi_tempered_logistic_loss",
    aliases=("BiTemperedLogisticLoss", "bi_tempered_loss"),
    refuses=(
        "mode 'binary': input and target not (N, 1, *), labels outside [0, 1]",
        "mode 'multiclass': input without a class dimension (N, C, *) with C >= 2; class indices outside [0, C) "
        "other than ignore_index; a float target (class probabilities) not shaped like input, outside [0, 1] or "
        "with ignore_index",
        "t1 outside [0, 1], t2 <= 0, label_smoothing outside [0, 1)",
        "t2 > 1 with C^t2 (C classes, 2 in mode 'binary') not below the input dtype's largest finite value (the "
        "normalization would overflow to NaN)",
    ),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred", "activations"),
              doc="logits (N, C, *) (classes on dim 1); mode 'binary': (N, 1, *)"),
        Input("target", "target", kind="float|int", aliases=("y_true", "labels"),
              doc="class indices (N, *) or class probabilities shaped like input; mode 'binary': labels (N, 1, *)"),
    ),
    params=(
        Param("t1", "float", 1.0, "Temperature of the loss's logarithm: < 1 bounds the loss (robust to outliers).",
              min=0.0, max=1.0),
        Param("t2", "float", 1.0, "Temperature of the tempered softmax: > 1 heavy tails (robust to label noise), "
              "< 1 finite support.", min=0.0, min_exclusive=True),
        Param("label_smoothing", "float", 0.0, "Targets become t·(1 - s·C/(C-1)) + s/(C-1) (toolbelt's smoothing).",
              min=0.0, max=1.0, max_exclusive=True),
        Param("num_iters", "int", 5, "Steps of the normalization (fixed point for t2 > 1, bisection for t2 < 1).",
              min=1, max=100),
        Param("ignore_index", "int", None, "Class index whose elements get loss 0 ('mean' still counts them, "
              "pytorch-toolbelt); null: none. Multiclass class indices only.", nullable=True),
        Param("mode", "string", "multiclass", "'multiclass': classes on dim 1; 'binary': one logit x per element, "
              "scored as the two classes (-x, x) (toolbelt's BinaryBiTemperedLogisticLoss).",
              choices=("multiclass", "binary")),
        Param("reduction", "string", "mean", "'mean' or 'sum' over elements, or 'none' (N, *) ((N, 1, *) binary).",
              choices=("none", "mean", "sum")),
    ),
    description="Bi-tempered logistic loss (Amid et al. 2019): tempered log (t1) of a tempered softmax (t2); "
    "t1 = t2 = 1 is cross-entropy.",
    source="lossd (Amid et al. 2019; pytorch-toolbelt bi_tempered_logistic_loss formula)",
    notes="The gradient is that of the converged normalization (the escort distribution), as in the paper's code "
    "and pytorch-toolbelt; with few num_iters it is not the derivative of the approximate value. log_t1(p) is "
    "computed from log p (log_softmax for t2 = 1), so a class whose probability underflows to 0 keeps a finite "
    "loss and finite gradients where pytorch-toolbelt's log_t1(p) gives inf or NaN (with t2 < 1, a true class "
    "outside the finite support still has an infinite loss for t1 = 1). With t1 = t2 = 1, class indices, no "
    "label_smoothing and no ignore_index the loss is torch's cross_entropy, bit for bit.",
    example=lambda dt: {"input": torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 1.5]], dtype=dt),
                        "target": torch.tensor([0, 2]), "params": {"t1": 0.8, "t2": 1.2}},
    equivalents=(
        Equivalent("pytorch_toolbelt.losses.BiTemperedLogisticLoss(t1=0.8, t2=1.4, smoothing=0.1)",
                   {"t1": 0.8, "t2": 1.4, "label_smoothing": 0.1}, "input (N, C) logits, target (N) class indices"),
        Equivalent("pytorch_toolbelt.losses.bi_tempered_logistic_loss(activations, labels, t1=0.5, t2=0.7, "
                   "num_iters=8, reduction='sum')", {"t1": 0.5, "t2": 0.7, "num_iters": 8, "reduction": "sum"},
                   "labels one-hot (N, C)"),
        Equivalent("pytorch_toolbelt.losses.BinaryBiTemperedLogisticLoss(t1=0.9, t2=1.2)",
                   {"t1": 0.9, "t2": 1.2, "mode": "binary"}, "input and target (N, 1, *)"),
    ),
)
def bi_tempered_logistic_loss(input: torch.Tensor, target: torch.Tensor, *, t1: float, t2: float,
                              label_smoothing: float, num_iters: int, ignore_index: int | None, mode: str,
                              reduction: str) -> torch.Tensor:
    """``p = exp_t2(x - λ)``; per element ``Σ_c y·log_t1(y) - y·log_t1(p) - y^(2-t1)/(2-t1) + p^(2-t1)/(2-t1)``."""
    keep = None
    if mode == "binary":
        require(input.dim() >= 2 and input.shape[1] == 1, "inputs.input",
                f"mode 'binary' needs logits (N, 1, *), got shape {list(input.shape)}")
        require(target.shape == input.shape, "inputs.target",
                f"mode 'binary' needs labels shaped like input {list(input.shape)}, got {list(target.shape)}")
        require(ignore_index is None, "params.ignore_index", "needs mode 'multiclass' with class indices")
        labels = target.to(input.dtype)
        require(bool(((labels >= 0) & (labels <= 1)).all()), "inputs.target", "labels must lie in [0, 1]")
        input, labels = torch.cat([-input, input], dim=1), torch.cat([1 - labels, labels], dim=1)
    else:
        require(input.dim() >= 2 and input.shape[1] >= 2, "inputs.input",
                f"must be logits (N, C, *) with C >= 2, got shape {list(input.shape)}")
        if target.is_floating_point():
            require(target.shape == input.shape, "inputs.target", f"class probabilities must have input's shape "
                    f"{list(input.shape)}, got {list(target.shape)}")
            require(ignore_index is None, "params.ignore_index", "needs class-index targets")
            require(bool(((target >= 0) & (target <= 1)).all()), "inputs.target",
                    "class probabilities must lie in [0, 1]")
            labels = target.to(input.dtype)
        else:
            expected = [input.shape[0], *input.shape[2:]]
            require(list(target.shape) == expected, "inputs.target",
                    f"class indices must be {expected}, got {list(target.shape)}")
            require_class_indices(target, input.shape[1], ignore_index)
            target = target.long()
            if ignore_index is not None:
                keep = target != ignore_index
                target = torch.where(keep, target, torch.zeros_like(target))
            labels = F.one_hot(target, input.shape[1]).movedim(-1, 1).to(input.dtype)
    if t1 == t2 == 1 and label_smoothing == 0 and not target.is_floating_point() and mode == "multiclass":
        # Σ y·log y - y·log p - y + p with one-hot y is -log p_y (Σ p = 1): torch's cross_entropy, bit for bit
        if keep is None and reduction != "none":
            return F.cross_entropy(input, target, reduction=reduction)
        loss = F.cross_entropy(input, target, reduction="none")
        if keep is not None:
            loss = torch.where(keep, loss, torch.zeros_like(loss))
        return loss.mean() if reduction == "mean" else (loss.sum() if reduction == "sum" else loss)
    c = labels.shape[1]
    if t2 > 1 and input.is_floating_point():  # λ and the exp_t terms grow like C^(t2-1): past the range, NaN
        largest = torch.finfo(input.dtype).max
        require(t2 * math.log(c) < math.log(largest), "params.t2",
                f"with {c} classes in {WIRE_NAMES[input.dtype]} must keep {c}^t2 below {largest:.4g} (t2 < "
                f"{math.log(largest) / math.log(c):.4g}): the normalization grows like C^(t2-1) and would overflow "
                "to NaN; send float64 or use a smaller t2")
    if label_smoothing > 0:
        labels = (1 - label_smoothing * c / (c - 1)) * labels + label_smoothing / (c - 1)
    probs, log_probs = tempered_log_softmax(input, t2, num_iters)
    present = labels > 0  # y·log_t(p) is 0 where y = 0, even where p = 0 (finite support)
    safe = torch.where(present, log_probs, torch.zeros_like(log_probs))
    cross = torch.where(present, labels * (_log_t(labels + 1e-10, t1) - _log_t_of_log(safe, t1)),
                        torch.zeros_like(probs))
    loss = (cross - labels.pow(2 - t1) / (2 - t1) + probs.pow(2 - t1) / (2 - t1)).sum(1)
    if keep is not None:
        loss = torch.where(keep, loss, torch.zeros_like(loss))
    if mode == "binary":
        loss = loss.unsqueeze(1)
    return loss.mean() if reduction == "mean" else (loss.sum() if reduction == "sum" else loss)


@register_loss(
    "balanced_binary_cross_entropy_with_logits",
    batch_coupled=True,  # the class balance is counted over the whole batch
    aliases=("BalancedBCEWithLogitsLoss", "balanced_bce_with_logits"),
    refuses=("a target shaped unlike the input",),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred", "logits", "output"),
              doc="logits, any shape"),
        Input("target", "target", aliases=("y_true", "targets"), doc="0/1 labels (or ignore_index), same shape"),
    ),
    params=(
        Param("gamma", "float", 1.0, "Power on the balance: β = (negatives / elements)^gamma, weights β^gamma on "
              "positives and (1 - β)^gamma on negatives (toolbelt's formula; 1: Xie & Tu's β).", min=0.0),
        Param("ignore_index", "int", None, "Target value whose elements get loss 0 ('mean' still counts them, "
              "pytorch-toolbelt); null: none.", nullable=True),
        REDUCTION,
    ),
    description="Class-balanced BCE with logits (Xie & Tu 2015, HED): positives weighted by the batch's fraction of "
    "negatives, negatives by the fraction of positives.",
    source="lossd (Xie & Tu 2015; pytorch-toolbelt balanced_binary_cross_entropy_with_logits formula)",
    notes="The counts are of target elements equal to 1 and to 0 over the whole request (soft labels count as "
    "neither), denominator + 1e-7; they carry no gradient. Half precision is computed in float32 and the loss cast "
    "back.",
    example=lambda dt: {"input": torch.tensor([[1.5, -0.5, 0.2, -2.0]], dtype=dt),
                        "target": torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dt)},
    equivalents=(
        Equivalent("pytorch_toolbelt.losses.BalancedBCEWithLogitsLoss()", {}, ""),
        Equivalent("pytorch_toolbelt.losses.BalancedBCEWithLogitsLoss(gamma=2.0, ignore_index=-1, reduction='sum')",
                   {"gamma": 2.0, "ignore_index": -1, "reduction": "sum"}, ""),
    ),
)
def balanced_binary_cross_entropy_with_logits(input: torch.Tensor, target: torch.Tensor, *, gamma: float,
                                              ignore_index: int | None, reduction: str) -> torch.Tensor:
    """``β = (#(t = 0) / (#(t = 0) + #(t = 1) + 1e-7))^gamma``;
    per element ``-(β^gamma · t · log σ(x) + (1 - β)^gamma · (1 - t) · log σ(-x))``."""
    require(target.shape == input.shape, "inputs.target",
            f"must have the input's shape {list(input.shape)}, got {list(target.shape)} (the loss is elementwise)")
    x = widened(input)  # half precision in float32: counts past 2048 (float16) or 256 (bfloat16) were rounded
    with torch.no_grad():
        positives, negatives = (target == 1).sum(), (target == 0).sum()
        beta = (negatives.to(x.dtype) / ((positives + negatives).to(x.dtype) + 1e-7)).pow(gamma)
    t = target.to(x.dtype)
    loss = -(beta.pow(gamma) * t * F.logsigmoid(x) + (1 - beta).pow(gamma) * (1 - t) * F.logsigmoid(-x))
    if ignore_index is not None:
        loss = torch.where(target == ignore_index, torch.zeros_like(loss), loss)
    loss = loss.mean() if reduction == "mean" else (loss.sum() if reduction == "sum" else loss)
    return narrowed(loss, input.dtype)
