"""Sequence losses from ``torch.nn``: CTC.

torch's ``ctc_loss`` returns a finite loss for target labels outside ``[0, C)`` or equal to
``blank``, and its own shape checks speak of "argument #2" rather than of target lengths.
Everything is checked here first, naming the input and the rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ._registry import REDUCTION, Input, LossError, Param, Work, register_loss, require

__all__: list[str] = []

#: How far ``logsumexp`` of a time step's log-probabilities may stray from 0.
_LOG_PROB_TOLERANCE = 1e-3


def _ctc_example(dt: torch.dtype) -> dict[str, object]:
    logits = torch.tensor(
        [[[0.5, 1.0, -0.5, 0.0]], [[1.5, -1.0, 0.5, 0.2]], [[0.0, 0.3, 1.2, -0.4]],
         [[-0.2, 0.8, 0.1, 1.0]], [[1.0, 0.0, 0.0, 0.5]]],
        dtype=torch.float64,
    )
    return {
        "log_probs": torch.log_softmax(logits, dim=2).to(dt),
        "targets": torch.tensor([[1, 3, 2]]),
        "input_lengths": torch.tensor([5]),
        "target_lengths": torch.tensor([3]),
    }


def _lengths(t: torch.Tensor, name: str, batched: bool, n: int) -> torch.Tensor:
    field = f"inputs.{name}"
    # torch reads the lengths flat: any shape of N elements (a 0-d one for a batch of one, (N, 1), ...)
    if batched:
        require(t.numel() == n, field,
                f"must have shape (N) = ({n}), one length per sequence (any shape of {n} elements, as torch "
                f"takes it); got {list(t.shape)}")
    else:
        require(t.numel() == 1, field,
                f"must be a scalar (or any shape of one element) for unbatched log_probs (T, C); got {list(t.shape)}")
    flat = t.reshape(-1)
    require((flat >= 0).all(), field, "lengths must be >= 0")
    return flat


def _labels(labels: torch.Tensor, n_classes: int, blank: int) -> None:
    if labels.numel() == 0:
        return
    require(((labels >= 0) & (labels < n_classes)).all(), "inputs.targets",
            f"labels must lie in [0, {n_classes}) (C = log_probs.shape[-1]); "
            f"found {int(labels.min())}..{int(labels.max())}")
    require((labels != blank).all(), "inputs.targets",
            f"labels must not equal the blank index ({blank}); the blank is not a target symbol")


def _lattice(bound: Mapping[str, Any], params: Mapping[str, Any]) -> int:
    """The elements of ctc_loss's alignment lattice: T · N · (2S + 1), S the longest target (the lengths
    sent, at most the padded width; concatenated targets: at most every label)."""
    log_probs, targets, lengths = bound["log_probs"], bound["targets"], bound.get("target_lengths")
    steps, batch = int(log_probs.shape[0]), int(log_probs.shape[1]) if log_probs.dim() == 3 else 1
    width = int(targets.shape[-1]) if targets.dim() else 1  # padded: S; concatenated: every label
    if isinstance(lengths, torch.Tensor) and lengths.numel():
        longest = int(lengths.max())
    elif isinstance(lengths, (list, tuple)) and lengths:
        longest = max(int(x) for x in lengths)
    elif isinstance(lengths, int):
        longest = lengths
    else:
        longest = width
    return steps * batch * (2 * max(0, min(longest, width)) + 1)  # lengths past the targets: refused by the loss


@register_loss(
    "ctc_loss",
    work=Work("the alignment lattice (T · N · (2S + 1))", "inputs.targets", _lattice),
    aliases=("CTCLoss", "ctc"),
    inputs=(
        Input("log_probs", "prediction", differentiable=True, aliases=("y_pred",),
              doc="log-probabilities (e.g. log_softmax over C), (T, N, C) or (T, C) unbatched"),
        Input("targets", "target", kind="int", aliases=("y_true",),
              doc="labels in [0, C), never blank: padded (N, S) or concatenated (sum(target_lengths)); "
                  "unbatched: (target_length) or (1, S)"),
        Input("input_lengths", "input lengths", kind="int", scalar="int_list",
              doc="length of each input, (N) (any shape of N elements, read flat as torch reads it), or () "
                  "unbatched or when N = 1; <= T; or a list of integers in params"),
        Input("target_lengths", "target lengths", kind="int", scalar="int_list",
              doc="length of each target, (N) (any shape of N elements, read flat), or () unbatched or when "
                  "N = 1; <= S when padded; or a list of integers in params"),
    ),
    params=(
        REDUCTION,
        Param("blank", "int", 0, "Index of the blank label; must be < C.", min=0),
        Param("zero_infinity", "bool", False,
              "Zero infinite losses (inputs too short to align to their targets) and their gradients."),
    ),
    description="Connectionist Temporal Classification loss over all alignments of targets to inputs.",
    source="torch.nn.functional.ctc_loss",
    notes="float16 and bfloat16 are not supported: torch has no CPU kernel for them "
    "(\"ctc_loss_cpu\" not implemented for 'Half'/'BFloat16'). log_probs must be normalized over C "
    "(logsumexp 0 within 1e-3) on the time steps each input uses; torch would return a "
    "meaningless loss for raw logits.",
    float_dtypes=("float32", "float64"),
    example=_ctc_example,
    refuses=("labels outside [0, C) or equal to blank", "lengths that are negative, over T or S, or that do not "
             "add up (torch reads out of bounds)", "log_probs that are not normalized over C (a meaningless "
             "number)", "blank >= C"),
)
def ctc_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: torch.Tensor | list[int],
    target_lengths: torch.Tensor | list[int],
    *,
    reduction: str,
    blank: int,
    zero_infinity: bool,
) -> torch.Tensor:
    r"""``-log sum_{alignments} prod_t p_t(a_t)`` per sequence.

    ``mean`` divides each loss by its target length (at least 1), then averages over the batch.
    Shapes: log_probs ``(T, N, C)`` or ``(T, C)``; targets ``(N, S)`` or ``(sum(target_lengths))``
    (N = 1 when unbatched); input_lengths, target_lengths ``(N)``, or ``()`` unbatched or when N = 1;
    output scalar, or ``(N)`` / ``()``
    for ``reduction='none'``.
    """
    require(log_probs.dim() in (2, 3), "inputs.log_probs",
            f"must have shape (T, N, C) or (T, C) unbatched; got {list(log_probs.shape)}")
    batched = log_probs.dim() == 3
    t_max, n_classes = log_probs.shape[0], log_probs.shape[-1]
    n = log_probs.shape[1] if batched else 1
    require(log_probs.numel() > 0, "inputs.log_probs", f"must not be empty; got {list(log_probs.shape)}")
    require(blank < n_classes, "params.blank",
            f"is {blank}; must be < C = {n_classes} (the number of classes, log_probs.shape[-1])")

    in_len = _lengths(torch.as_tensor(input_lengths), "input_lengths", batched, n)
    tg_len = _lengths(torch.as_tensor(target_lengths), "target_lengths", batched, n)
    require((in_len <= t_max).all(), "inputs.input_lengths",
            f"lengths must be <= T = {t_max} (log_probs.shape[0]); got max {int(in_len.max())}")

    if targets.dim() == 1:  # concatenated targets (also what torch makes of unbatched (S) targets)
        total = int(tg_len.sum())
        require(targets.shape[0] == total, "inputs.target_lengths",
                f"1-D (concatenated) targets need sum(target_lengths) == len(targets); "
                f"got sum {total} and len {targets.shape[0]}")
        labels = targets
    else:
        require(targets.dim() == 2 and targets.shape[0] == n, "inputs.targets",
                f"must have shape (N, S) = ({n}, S) padded or (sum(target_lengths)) concatenated; "
                f"got {list(targets.shape)}")
        s = targets.shape[1]
        require((tg_len <= s).all(), "inputs.target_lengths",
                f"lengths must be <= S = {s} (targets.shape[1]); got max {int(tg_len.max())}")
        used = torch.arange(s, device=targets.device).unsqueeze(0) < tg_len.unsqueeze(1)
        labels = targets[used]
    _labels(labels, n_classes, blank)
    _normalized(log_probs, in_len, batched)

    # torch's functional.pyi types the lengths as Tensor only; the lists torch also takes are passed as sent.
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths,  # type: ignore[arg-type]
                      blank=blank, reduction=reduction, zero_infinity=zero_infinity)


def _normalized(log_probs: torch.Tensor, in_len: torch.Tensor, batched: bool) -> None:
    """Each used time step must hold log-probabilities: logsumexp over C is 0 (within tolerance)."""
    with torch.no_grad():
        lse = torch.logsumexp(log_probs.detach().to(torch.float64), dim=-1)  # (T, N) or (T)
        if not batched:
            lse = lse.unsqueeze(1)
        used = torch.arange(lse.shape[0], device=lse.device).unsqueeze(1) < in_len.to(lse.device).unsqueeze(0)
        bad = used & ~(lse.abs() <= _LOG_PROB_TOLERANCE)  # NaN counts as bad
        if bool(bad.any()):
            t, i = (int(v) for v in bad.nonzero()[0])
            where = f"[{t}, {i}]" if batched else f"[{t}]"
            raise LossError(
                "inputs.log_probs",
                f"must be log-probabilities over the C classes (e.g. log_softmax(logits, dim=-1)); "
                f"logsumexp of log_probs{where} is {float(lse[t, i]):.6g}, not 0",
            )
