"""Configured ``torch.nn`` loss modules as lossd requests: name, parameters and tensors.

``client.evaluate(nn.CrossEntropyLoss(weight=w, label_smoothing=0.1), x, y)``
and ``RemoteLoss(nn.HuberLoss(delta=2.0))`` read the module's constructor
settings (its attributes) and buffers (``weight``, ``pos_weight``) from a
table of the known ``torch.nn`` loss classes. Nothing is pickled and no code
travels: a subclass (which may override ``forward``) or any other object is a
``TypeError`` naming what is accepted. This module never imports torch; it is
only reached with a module in hand::

    >>> import torch
    >>> module_request(torch.nn.HuberLoss(delta=2.0, reduction="sum"))
    ('huber_loss', {'reduction': 'sum', 'delta': 2.0}, {})
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["KNOWN_MODULES", "accepted", "is_module", "module_request", "param_value"]


@dataclass(frozen=True)
class _Known:
    """How one ``torch.nn`` class maps onto a lossd loss."""

    loss: str
    #: module attribute -> lossd parameter name
    params: Mapping[str, str]
    #: tensor attributes (buffers) sent as inputs when set
    tensors: tuple[str, ...] = ()


def _same(*names: str) -> dict[str, str]:
    return {n: n for n in names}


#: The ``torch.nn`` loss classes the SDK translates, by class name.
KNOWN_MODULES: dict[str, _Known] = {
    "L1Loss": _Known("l1_loss", _same("reduction")),
    "MSELoss": _Known("mse_loss", _same("reduction")),
    "CrossEntropyLoss": _Known("cross_entropy", _same("reduction", "ignore_index", "label_smoothing"), ("weight",)),
    "NLLLoss": _Known("nll_loss", _same("reduction", "ignore_index"), ("weight",)),
    "BCELoss": _Known("binary_cross_entropy", _same("reduction"), ("weight",)),
    "BCEWithLogitsLoss": _Known("binary_cross_entropy_with_logits", _same("reduction"), ("weight", "pos_weight")),
    "KLDivLoss": _Known("kl_div", _same("reduction", "log_target")),
    "HuberLoss": _Known("huber_loss", _same("reduction", "delta")),
    "SmoothL1Loss": _Known("smooth_l1_loss", _same("reduction", "beta")),
    "PoissonNLLLoss": _Known("poisson_nll_loss", _same("log_input", "full", "eps", "reduction")),
    "GaussianNLLLoss": _Known("gaussian_nll_loss", _same("full", "eps", "reduction")),
    "MarginRankingLoss": _Known("margin_ranking_loss", _same("margin", "reduction")),
    "HingeEmbeddingLoss": _Known("hinge_embedding_loss", _same("margin", "reduction")),
    "CosineEmbeddingLoss": _Known("cosine_embedding_loss", _same("margin", "reduction")),
    "SoftMarginLoss": _Known("soft_margin_loss", _same("reduction")),
    "MultiLabelSoftMarginLoss": _Known("multilabel_soft_margin_loss", _same("reduction"), ("weight",)),
    "MultiLabelMarginLoss": _Known("multilabel_margin_loss", _same("reduction")),
    "MultiMarginLoss": _Known("multi_margin_loss", _same("p", "margin", "reduction"), ("weight",)),
    "TripletMarginLoss": _Known("triplet_margin_loss", _same("margin", "p", "eps", "swap", "reduction")),
    "TripletMarginWithDistanceLoss": _Known("triplet_margin_with_distance_loss", _same("margin", "swap", "reduction")),
    "CTCLoss": _Known("ctc_loss", _same("blank", "reduction", "zero_infinity")),
    "CosineSimilarity": _Known("cosine_similarity", _same("dim", "eps")),
    "PairwiseDistance": _Known("pairwise_distance", {"norm": "p", "eps": "eps", "keepdim": "keepdim"}),
    "LinearCrossEntropyLoss": _Known("linear_cross_entropy",
                                     _same("reduction", "ignore_index", "label_smoothing", "options"), ("weight",)),
}

_ACCEPTED = ("a loss name (str), a list of objective terms, or an instance of one of these torch.nn classes "
             "(not a subclass): " + ", ".join(f"nn.{n}" for n in sorted(KNOWN_MODULES)))


def is_module(x: object) -> bool:
    """True for a ``torch.nn.Module`` instance, without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.nn.Module)


def accepted() -> str:
    """What a loss specifier may be, for ``TypeError`` messages."""
    return _ACCEPTED


def module_request(module: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(loss name, params, tensors)`` for a configured ``torch.nn`` loss module.

    Raises ``TypeError`` for any other object, naming the accepted classes.
    """
    torch = sys.modules.get("torch")
    cls = type(module)
    known = KNOWN_MODULES.get(cls.__name__)
    if torch is None or known is None or cls is not getattr(torch.nn, cls.__name__, None):
        what = f"{cls.__module__}.{cls.__qualname__}"
        raise TypeError(f"cannot send a {what} as a loss; the loss must be {_ACCEPTED}")
    params = {param: param_value(param, getattr(module, attr)) for attr, param in known.params.items()}
    if cls.__name__ == "TripletMarginWithDistanceLoss":
        params["distance_function"] = param_value("distance_function", module.distance_function)
    tensors = {name: getattr(module, name) for name in known.tensors if getattr(module, name) is not None}
    if cls.__name__ == "LinearCrossEntropyLoss":  # its projection is a parameter: sent, with its gradient
        linear = module.linear
        tensors["linear_weight"] = linear.weight.reshape((module.num_classes, *module.out_features,
                                                          linear.in_features))
        if linear.bias is not None:
            tensors["linear_bias"] = linear.bias.reshape((module.num_classes, *module.out_features))
    return known.loss, params, tensors


def param_value(name: str, value: Any) -> Any:
    """A parameter as JSON can carry it: numpy scalars and 0-d torch tensors as Python numbers, strings
    and booleans (lists and dicts of them too), torch's option dataclasses (``LinearCrossEntropyOptions``)
    as objects, dtypes by name, a ``TripletMarginWithDistanceLoss`` distance by the server's name for it.

    >>> param_value("reduction", "sum"), param_value("ignore_index", np.int64(2)), param_value("w", [np.float32(0.5)])
    ('sum', 2, [0.5])
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [param_value(name, v) for v in value]
    if isinstance(value, dict):
        return {k: param_value(k, v) for k, v in value.items()}
    torch = sys.modules.get("torch")
    if torch is None:
        return value
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return value.item()
    if name == "distance_function" and not isinstance(value, str):
        return _distance_name(value, torch)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: param_value(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return value


def _distance_name(fn: Any, torch: Any) -> str:
    """The lossd name of a ``TripletMarginWithDistanceLoss`` distance: torch's default only.

    lossd never runs client code; its other named distances are chosen with
    ``distance_function="cosine_distance"`` etc. as a parameter instead of a module.
    """
    F = torch.nn.functional
    if fn is None or fn is F.pairwise_distance or fn is torch.pairwise_distance:
        return "pairwise_distance"
    if type(fn) is torch.nn.PairwiseDistance and (fn.norm, fn.eps, fn.keepdim) == (2.0, 1e-6, False):
        return "pairwise_distance"
    raise TypeError(
        f"TripletMarginWithDistanceLoss(distance_function={fn!r}) cannot be sent: lossd never runs client "
        "code. Use the default (None, torch.pairwise_distance) or name one of the server's distances: "
        "RemoteLoss('triplet_margin_with_distance_loss', distance_function='cosine_distance') "
        "(pairwise_distance, cosine_distance, l1, squared_euclidean)")
