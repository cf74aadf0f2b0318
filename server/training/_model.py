"""The models a job can train: ``linear`` and ``mlp``, as a named ``nn.Sequential``.

Layer names are part of the contract (parameter names in events, patterns in
``param_groups`` and ``regularization``): hidden layers ``fc1``, ``fc2``, ...
(activations ``act1``..., dropout ``drop1``...), the output layer ``out`` and
its activation ``out_act``::

    >>> m = build_model(ModelPlan("mlp", hidden=(4, 8), output_activation="sigmoid"), 2, 1)
    >>> [n for n, _ in m.named_parameters()]
    ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias', 'out.weight', 'out.bias']
    >>> m
    Sequential(
      (fc1): Linear(in_features=2, out_features=4, bias=True)
      (act1): ReLU()
      (fc2): Linear(in_features=4, out_features=8, bias=True)
      (act2): ReLU()
      (out): Linear(in_features=8, out_features=1, bias=True)
      (out_act): Sigmoid()
    )

A client with torch can rebuild the same module and ``load_state_dict`` the
trained parameters.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "OUTPUT_ACTIVATIONS", "ModelPlan", "build_model", "count_parameters"]

#: Hidden-layer activations by name.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}

#: Output activations by name ("" and "none": the raw output, e.g. logits).
OUTPUT_ACTIVATIONS: dict[str, Callable[[], nn.Module] | None] = {
    "": None,
    "none": None,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softmax": lambda: nn.Softmax(dim=1),
    "log_softmax": lambda: nn.LogSoftmax(dim=1),
}


@dataclass(frozen=True)
class ModelPlan:
    """A validated model spec."""

    kind: str  # "linear" or "mlp"
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    output_activation: str = ""
    dropout: float = 0.0


def build_model(plan: ModelPlan, in_features: int, out_features: int, device: str | torch.device = "cpu") -> nn.Sequential:
    """The model for ``plan``; parameters initialised by torch's defaults from the global RNG."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width = in_features
    for i, size in enumerate(plan.hidden if plan.kind == "mlp" else (), start=1):
        layers[f"fc{i}"] = nn.Linear(width, size, device=device)
        layers[f"act{i}"] = ACTIVATIONS[plan.activation]()
        if plan.dropout > 0:
            layers[f"drop{i}"] = nn.Dropout(plan.dropout)
        width = size
    layers["out"] = nn.Linear(width, out_features, device=device)
    make_out = OUTPUT_ACTIVATIONS[plan.output_activation]
    if make_out is not None:
        layers["out_act"] = make_out()
    return nn.Sequential(layers)


def count_parameters(plan: ModelPlan, in_features: int, out_features: int) -> int:
    """Number of scalar parameters, computed without building the model.

    >>> count_parameters(ModelPlan("mlp", hidden=(4, 8)), 2, 1)
    61
    """
    sizes = [in_features, *(plan.hidden if plan.kind == "mlp" else ()), out_features]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))
