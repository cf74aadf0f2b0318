"""The evaluation layer: losses on torch tensors, no gRPC and no protobuf.

Binding (sent names and params checked against a loss's declaration),
one evaluation (:func:`evaluate`), and composite, regularized objectives
(:func:`evaluate_objective`; the L1/L2 convention, :func:`add_penalties`, that
training uses too). The RPC layer (:mod:`lossd.server.rpc`) calls it with
decoded tensors::

    >>> import torch
    >>> from lossd.server.losses import REGISTRY
    >>> evaluate(REGISTRY, "l1_loss", {"input": torch.tensor([2.0]), "target": torch.tensor([0.5])}, {}).loss
    tensor(1.5000)
"""

from __future__ import annotations

from ._binding import (
    DEPRECATED_PARAMS,
    HasParams,
    bind_inputs,
    bind_params,
    check_work,
    grad_targets,
    has_grad,
    legacy_reduction,
    params_from_tensors,
    split_scalars,
)
from ._evaluate import (
    Binding,
    Evaluation,
    LossCrashed,
    bind,
    call_backward,
    call_loss,
    check_param_range,
    escaped,
    evaluate,
    param_copies,
    resolve_device,
    run_bound,
)
from ._objective import (
    MAX_PATTERN_CHARS,
    MAX_PATTERNS,
    Regularization,
    Term,
    add_penalties,
    check_patterns,
    covered_parameters,
    covers_nothing,
    evaluate_objective,
    glob_matcher,
)
from ._vectorized import MAX_ITEM_ELEMENTS, StackedEvaluation, StackedPlan, evaluate_stacked, plan_stacked
from ._warnings import capture as capture_warnings

__all__ = [
    "DEPRECATED_PARAMS",
    "MAX_ITEM_ELEMENTS",
    "MAX_PATTERNS",
    "MAX_PATTERN_CHARS",
    "Binding",
    "Evaluation",
    "HasParams",
    "LossCrashed",
    "Regularization",
    "StackedEvaluation",
    "StackedPlan",
    "Term",
    "add_penalties",
    "bind",
    "bind_inputs",
    "bind_params",
    "call_backward",
    "call_loss",
    "capture_warnings",
    "check_param_range",
    "check_work",
    "check_patterns",
    "covered_parameters",
    "covers_nothing",
    "escaped",
    "evaluate",
    "evaluate_objective",
    "evaluate_stacked",
    "glob_matcher",
    "grad_targets",
    "has_grad",
    "legacy_reduction",
    "param_copies",
    "params_from_tensors",
    "plan_stacked",
    "resolve_device",
    "run_bound",
    "split_scalars",
]
