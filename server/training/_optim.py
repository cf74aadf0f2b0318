"""Optimizers with per-parameter groups, and learning-rate schedules.

Every parameter lands in exactly one group: the ``param_groups`` entry whose
patterns match its name, else the default group (the optimizer's own
settings). The seed's "weight decay on weights, not on biases"::

    >>> import torch
    >>> model = torch.nn.Sequential()
    >>> model.add_module("fc1", torch.nn.Linear(2, 3))
    >>> plan = OptimizerPlan("sgd", {"lr": 0.1}, (GroupPlan("decay", ("*.weight",), {"weight_decay": 0.01}),))
    >>> opt = build_optimizer(plan, model)
    >>> [(g["name"], g["weight_decay"], len(g["params"])) for g in opt.param_groups]
    [('default', 0, 1), ('decay', 0.01, 1)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..evaluation import glob_matcher

__all__ = [
    "OPTIMIZERS",
    "GroupPlan",
    "OptimizerPlan",
    "SchedulePlan",
    "assign_groups",
    "build_optimizer",
    "build_scheduler",
]

#: torch.optim class and the settings each optimizer accepts (beyond lr and weight_decay).
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], frozenset[str]]] = {
    "sgd": (torch.optim.SGD, frozenset({"momentum", "dampening", "nesterov"})),
    "adam": (torch.optim.Adam, frozenset({"betas", "eps", "amsgrad"})),
    "adamw": (torch.optim.AdamW, frozenset({"betas", "eps", "amsgrad"})),
    "rmsprop": (torch.optim.RMSprop, frozenset({"momentum", "eps", "alpha", "centered"})),
    "adagrad": (torch.optim.Adagrad, frozenset({"eps", "lr_decay"})),
}


@dataclass(frozen=True)
class GroupPlan:
    """A validated ``param_groups`` entry: its label, patterns and setting overrides."""

    name: str
    patterns: tuple[str, ...]
    overrides: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerPlan:
    """A validated optimizer: its name, torch keyword arguments, and groups."""

    name: str
    settings: Mapping[str, Any]
    groups: tuple[GroupPlan, ...] = ()


@dataclass(frozen=True)
class SchedulePlan:
    """A validated schedule: ``step``, ``cosine`` or ``exponential`` and torch keyword arguments."""

    kind: str
    settings: Mapping[str, Any]


def assign_groups(
    names: Sequence[str], groups: Sequence[GroupPlan]
) -> tuple[list[str], list[list[str]], list[tuple[str, int, int]]]:
    """``(default, per_group, clashes)``: parameter names per group, in ``names`` order.

    ``clashes`` lists ``(name, i, j)`` for a parameter matched by groups ``i`` and ``j``.

    >>> assign_groups(["a.weight", "a.bias"], [GroupPlan("g", ("*.weight",))])
    (['a.bias'], [['a.weight']], [])
    """
    default: list[str] = []
    per_group: list[list[str]] = [[] for _ in groups]
    clashes: list[tuple[str, int, int]] = []
    matchers = [glob_matcher(g.patterns) for g in groups]
    for name in names:
        hits = [i for i, matches in enumerate(matchers) if matches(name)]
        if not hits:
            default.append(name)
        else:
            per_group[hits[0]].append(name)
            clashes += [(name, hits[0], j) for j in hits[1:]]
    return default, per_group, clashes


def build_optimizer(plan: OptimizerPlan, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The torch optimizer: the default group first (when it has parameters), then ``param_groups`` in order."""
    params = dict(model.named_parameters())
    default, per_group, _ = assign_groups(list(params), plan.groups)
    groups: list[dict[str, Any]] = []
    if default:
        groups.append({"params": [params[n] for n in default], "name": "default"})
    for g, names in zip(plan.groups, per_group):
        groups.append({"params": [params[n] for n in names], "name": g.name, **g.overrides})
    cls, _ = OPTIMIZERS[plan.name]
    return cls(groups, **plan.settings)


def build_scheduler(
    plan: SchedulePlan | None, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch learning-rate scheduler, or ``None``."""
    if plan is None:
        return None
    if plan.kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, **plan.settings)
    if plan.kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, **plan.settings)
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, **plan.settings)
