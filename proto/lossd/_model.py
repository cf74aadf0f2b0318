"""The models a training job trains, ``linear`` and ``mlp``: defined once, for the server and the SDK.

Layer names are part of the contract (parameter names in events, patterns in
``param_groups`` and ``regularization``): hidden layers ``fc1``, ``fc2``, ...
(activations ``act1``..., dropout ``drop1``...), the output layer ``out`` and
its activation ``out_act``. :func:`layers` lists them without torch;
:func:`build_model` makes the ``nn.Sequential`` (it imports torch when called,
so ``import lossd.client`` stays torch-free while ``TrainResult.build_model``
rebuilds exactly the module the server trained)::

    >>> plan = ModelPlan("mlp", hidden=(4, 8), output_activation="sigmoid")
    >>> [name for name, _, _ in layers(plan, 2, 1)]
    ['fc1', 'act1', 'fc2', 'act2', 'out', 'out_act']
    >>> build_model(plan, 2, 1)
    Sequential(
      (fc1): Linear(in_features=2, out_features=4, bias=True)
      (act1): ReLU()
      (fc2): Linear(in_features=4, out_features=8, bias=True)
      (act2): ReLU()
      (out): Linear(in_features=8, out_features=1, bias=True)
      (out_act): Sigmoid()
    )
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["ACTIVATIONS", "OUTPUT_ACTIVATIONS", "ModelPlan", "build_model", "count_parameters", "layers"]

#: A layer: ``torch.nn`` class name and keyword arguments.
Layer = tuple[str, dict[str, Any]]

#: Hidden-layer activations by name.
ACTIVATIONS: dict[str, Layer] = {
    "relu": ("ReLU", {}),
    "tanh": ("Tanh", {}),
    "gelu": ("GELU", {}),
    "sigmoid": ("Sigmoid", {}),
}

#: Output activations by name ("" and "none": the raw output, e.g. logits).
OUTPUT_ACTIVATIONS: dict[str, Layer | None] = {
    "": None,
    "none": None,
    "sigmoid": ("Sigmoid", {}),
    "tanh": ("Tanh", {}),
    "softmax": ("Softmax", {"dim": 1}),
    "log_softmax": ("LogSoftmax", {"dim": 1}),
}


@dataclass(frozen=True)
class ModelPlan:
    """A model spec: ``kind`` is ``linear`` or ``mlp`` (the server validates it first)."""

    kind: str
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    output_activation: str = ""
    dropout: float = 0.0

    @classmethod
    def from_message(cls, model: Any) -> ModelPlan:
        """The plan of a ``TrainJobRequest.model`` message, as it is (unchecked; defaults filled in).

        >>> from lossd.v1 import training_pb2
        >>> ModelPlan.from_message(training_pb2.TrainJobRequest().model.__class__(linear={}))
        ModelPlan(kind='linear', hidden=(), activation='relu', output_activation='', dropout=0.0)
        """
        if model.WhichOneof("kind") == "mlp":
            mlp = model.mlp
            return cls("mlp", tuple(mlp.hidden), mlp.activation or "relu", mlp.output_activation, mlp.dropout)
        return cls("linear", output_activation=model.linear.output_activation)


def layers(plan: ModelPlan, in_features: int, out_features: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The model's layers in order: ``(name, torch.nn class name, keyword arguments)``."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    width = in_features
    for i, size in enumerate(plan.hidden if plan.kind == "mlp" else (), start=1):
        out.append((f"fc{i}", "Linear", {"in_features": width, "out_features": size}))
        cls, kwargs = ACTIVATIONS[plan.activation]
        out.append((f"act{i}", cls, dict(kwargs)))
        if plan.dropout > 0:
            out.append((f"drop{i}", "Dropout", {"p": plan.dropout}))
        width = size
    out.append(("out", "Linear", {"in_features": width, "out_features": out_features}))
    output = OUTPUT_ACTIVATIONS[plan.output_activation]
    if output is not None:
        out.append(("out_act", output[0], dict(output[1])))
    return out


def build_model(
    plan: ModelPlan, in_features: int, out_features: int, device: str | torch.device = "cpu"
) -> nn.Sequential:
    """The model for ``plan`` (needs torch); parameters initialised by torch's defaults from the
    global RNG, layer by layer in order, so the same seed gives the same parameters everywhere."""
    from torch import nn  # torch is optional for the SDK: imported by the call that needs it

    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for name, cls, kwargs in layers(plan, in_features, out_features):
        if cls == "Linear":
            kwargs["device"] = device
        modules[name] = getattr(nn, cls)(**kwargs)
    return nn.Sequential(modules)


def count_parameters(plan: ModelPlan, in_features: int, out_features: int) -> int:
    """Number of scalar parameters, computed without building the model.

    >>> count_parameters(ModelPlan("mlp", hidden=(4, 8)), 2, 1)
    61
    """
    sizes = [in_features, *(plan.hidden if plan.kind == "mlp" else ()), out_features]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))
