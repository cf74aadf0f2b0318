"""Many evaluations of one loss in one torch call, bit-identical to one at a time.

A loss registered ``vectorized=True`` is elementwise in its inputs and reduced by a
plain mean or sum (``mse_loss``, ``l1_loss``). Items that share the loss, params,
dtypes, shapes and wanted gradients are stacked along a new first dimension,
the loss runs once with ``reduction='none'``, each item's row is reduced as torch
reduces one item (``mean``/``sum`` over the item's own elements), and one
backward gives every item's gradients. torch's kernels then do per item exactly
the arithmetic they do for that item alone (the same elementwise formula, the
same inner reduction over one contiguous row); ``tests/unit/test_vectorized.py``
proves it bit for bit for every vectorized loss, dtype and reduction.

Where the proof does not reach, :func:`evaluate_stacked` returns ``None`` and the
caller evaluates the items one by one: an optional input sent (``weight``),
inputs of different shapes (broadcasting), empty items (the mean of nothing is a NaN
whose bits torch does not promise), more than :data:`MAX_ITEM_ELEMENTS`
per item (torch splits a longer full reduction across threads, in another
order), a ``grad_output``, a loss that raises or warns (each item then gets its own
error or its own warnings)::

    >>> import torch
    >>> from lossd.server.losses import REGISTRY
    >>> x, y = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.zeros(2, 2)
    >>> [float(e.loss) for e in evaluate_stacked(REGISTRY, "mse", {"y_pred": x, "y_true": y}, {}, ()).items()]
    [2.5, 12.5]
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..._wire import FieldError
from ..losses import LossSpec, Registry, strictness
from ._binding import DEPRECATED_PARAMS, bind_inputs, bind_params, grad_targets
from ._evaluate import Evaluation, autograd_grad, call_loss, escaped
from ._warnings import capture

__all__ = ["MAX_ITEM_ELEMENTS", "StackedEvaluation", "StackedPlan", "evaluate_stacked", "plan_stacked"]

#: Most elements per item of a vectorized group. torch reduces a tensor of more than
#: 32768 elements (its grain size) in chunks across threads: one item alone would then be
#: summed in another order than its row of a stacked tensor.
MAX_ITEM_ELEMENTS = 16384

_REDUCTIONS = ("mean", "sum", "none")


@dataclass
class StackedEvaluation:
    """The outcome of :func:`evaluate_stacked`: row ``i`` of ``loss`` and of each gradient is item ``i``'s."""

    spec: LossSpec
    loss: torch.Tensor
    grads: dict[str, torch.Tensor]
    forward_s: float
    backward_s: float

    def __len__(self) -> int:
        return int(self.loss.shape[0])

    def items(self) -> list[Evaluation]:
        """One :class:`Evaluation` per item (views into the stacked tensors); times shared equally."""
        n = len(self)
        losses = self.loss.unbind(0)
        grads = {k: g.unbind(0) for k, g in self.grads.items()}
        return [Evaluation(self.spec, losses[i], {k: g[i] for k, g in grads.items()}, self.forward_s / n,
                           self.backward_s / n) for i in range(n)]


@dataclass(frozen=True)
class StackedPlan:
    """What binding decided for a vectorized group (:func:`plan_stacked`): it depends on the loss, the
    params, the wanted gradients and the inputs' names, dtypes and item shapes, not on the values or
    the number of items, so a server keeps it for the next group of the same signature."""

    spec: LossSpec
    #: Sent name -> canonical name, for every input.
    canonical: dict[str, str]
    #: Canonical names of the inputs to differentiate.
    wanted: tuple[str, ...]
    #: The loss's keyword arguments, with ``reduction='none'``; ``reduction`` is the one sent.
    kwargs: dict[str, Any]
    reduction: str
    strict: bool

    def run(self, stacked: Mapping[str, torch.Tensor], device: torch.device | None = None) -> StackedEvaluation | None:
        """Evaluate the items stacked along dimension 0 (keyed by sent name, with the dtypes and item shapes
        the plan was made for): row ``i`` is item ``i``'s result, or ``None`` when torch refuses or warns
        (evaluate the items one by one then: each gets its own error or warnings)."""
        spec = self.spec
        tensors: dict[str, torch.Tensor] = {}
        leaves: dict[str, torch.Tensor] = {}
        for sent, t in stacked.items():
            name = self.canonical[sent]
            if device is not None and device.type != "cpu":
                t = t.to(device)
            if name in self.wanted:
                t = leaves[sent] = t.detach().requires_grad_(True)
            tensors[name] = t
        try:
            with capture() as seen, strictness(self.strict):
                start = time.perf_counter()
                with torch.enable_grad():
                    each = call_loss(spec, tensors, self.kwargs)
                    dims = tuple(range(1, each.dim()))
                    if self.reduction == "none" or not dims:  # 0-d items: mean and sum of one element are it
                        out = each
                    else:
                        out = each.mean(dim=dims) if self.reduction == "mean" else each.sum(dim=dims)
                forward_s = time.perf_counter() - start
                start = time.perf_counter()
                found: Sequence[torch.Tensor | None] = (None,) * len(leaves)
                if leaves and out.requires_grad:
                    try:
                        found = autograd_grad(out, list(leaves.values()), torch.ones_like(out))
                    except BaseException as e:  # a loss's own backward raising SystemExit...: one by one
                        if (crash := escaped(spec.name, e)) is None:
                            raise
                        raise crash from e
                backward_s = time.perf_counter() - start
        except (FieldError, RuntimeError, ValueError, TypeError, IndexError):
            return None
        if seen:  # a warning belongs to the items that raised it: evaluate one by one
            return None
        grads = {sent: torch.zeros_like(leaf) if g is None else g for (sent, leaf), g in zip(leaves.items(), found)}
        return StackedEvaluation(spec, out.detach(), grads, forward_s, backward_s)


def plan_stacked(
    registry: Registry,
    loss: str,
    stacked: Mapping[str, torch.Tensor],
    params: Mapping[str, Any],
    grad_inputs: Sequence[str],
    strict: bool = False,
) -> StackedPlan | None:
    """The :class:`StackedPlan` of items stacked as ``stacked`` (only their dtypes and shapes are read: meta
    tensors do), or ``None`` when such a group cannot be vectorized exactly (evaluate the items one by one
    then: that also reports each item's own error).

    >>> from lossd.server.losses import REGISTRY
    >>> meta = torch.empty(8, 100, device="meta")
    >>> plan_stacked(REGISTRY, "mse", {"y_pred": meta, "y_true": meta}, {}, ()).canonical
    {'y_pred': 'input', 'y_true': 'target'}
    >>> plan_stacked(REGISTRY, "mse", {"y_pred": meta, "y_true": meta}, {"reduction": "nope"}, ()) is None
    True
    """
    try:
        spec = registry.get(loss)
        if not spec.vectorized:
            return None
        tensors, sent_as = bind_inputs(spec, stacked)
        kwargs = bind_params(spec, params, refused=DEPRECATED_PARAMS)
        wanted = grad_targets(spec, tensors, sent_as, grad_inputs)
    except FieldError:
        return None
    if not _exact(spec.inputs, tensors, kwargs):
        return None
    return StackedPlan(spec, {sent: name for name, sent in sent_as.items()}, tuple(sorted(wanted)),
                       {**kwargs, "reduction": "none"}, kwargs["reduction"], strict)


def evaluate_stacked(
    registry: Registry,
    loss: str,
    stacked: Mapping[str, torch.Tensor],
    params: Mapping[str, Any],
    grad_inputs: Sequence[str],
    device: torch.device | None = None,
    strict: bool = False,
) -> StackedEvaluation | None:
    """Evaluate ``n`` items whose inputs are stacked along dimension 0 (``stacked[name][i]`` is
    item ``i``'s tensor): row ``i`` of the result is bit-identical to
    :func:`~lossd.server.evaluation.evaluate` of item ``i`` alone, or ``None`` when the group
    cannot be vectorized exactly (evaluate the items one by one then: that also reports
    each item's own error). :func:`plan_stacked`, then :meth:`StackedPlan.run`."""
    plan = plan_stacked(registry, loss, stacked, params, grad_inputs, strict)
    return None if plan is None else plan.run(stacked, device)


def _exact(declared: Sequence[Any], tensors: Mapping[str, torch.Tensor], kwargs: Mapping[str, Any]) -> bool:
    """The group is within what the bit-identity proof covers: exactly the required inputs,
    floating-point, one dtype, one shape, 1 to MAX_ITEM_ELEMENTS elements each, a known reduction."""
    required = {i.name for i in declared if i.required}
    if set(tensors) != required or kwargs.get("reduction") not in _REDUCTIONS:
        return False
    if set(kwargs) != {"reduction"}:
        return False
    shapes = {tuple(t.shape) for t in tensors.values()}
    dtypes = {t.dtype for t in tensors.values()}
    if len(shapes) != 1 or len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        return False
    shape = next(iter(shapes))
    per_item = 1
    for d in shape[1:]:
        per_item *= d
    return len(shape) >= 1 and 0 < per_item <= MAX_ITEM_ELEMENTS  # empty: NaN means whose bits may differ
