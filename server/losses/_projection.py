"""Losses with their own weights: adaptive log-softmax and linear cross entropy.

The weights travel as named inputs and get gradients like any other differentiable input.
``adaptive_log_softmax_with_loss`` builds ``torch.nn.AdaptiveLogSoftmaxWithLoss`` (on the
``meta`` device: nothing allocated, no random initialisation) and runs it through
``torch.func.functional_call`` with the sent tensors as its parameters, so the value and
gradients are exactly the module's. Its weight inputs are named like the module's
``state_dict()`` keys (``head.weight``, ``tail.0.0.weight``, …), with short aliases
(``head_weight``, ``tail_0_proj``, ``tail_0_out``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.modules.linear_cross_entropy_options import LinearCrossEntropyOptions

from ._classification import SMOOTHING
from ._registry import (
    REDUCTION,
    Input,
    LossError,
    Param,
    Work,
    class_indices,
    register_loss,
    require,
    require_class_indices,
)

__all__ = ["MAX_CLUSTERS"]

#: Tail clusters ``adaptive_log_softmax_with_loss`` accepts (its inputs are declared statically).
MAX_CLUSTERS = 8
#: Widest tail projection that is worth computing a shape for (any tensor that size is refused anyway).
_MAX_WIDTH = 2**31 - 1


# ---------------------------------------------------------------------------------------
# adaptive_log_softmax_with_loss


def _proj(i: int) -> str:
    return f"tail.{i}.0.weight"


def _out(i: int) -> str:
    return f"tail.{i}.1.weight"


def _tail_inputs() -> tuple[Input, ...]:
    out: list[Input] = []
    for i in range(MAX_CLUSTERS):
        out.append(Input(_proj(i), "tail projection weight", differentiable=True, required=False,
                         aliases=(f"tail_{i}_proj",),
                         doc=f"(in_features // div_value**{i + 1}, in_features); needed when len(cutoffs) > {i}"))
        out.append(Input(_out(i), "tail output weight", differentiable=True, required=False,
                         aliases=(f"tail_{i}_out",),
                         doc=f"(cutoffs[{i + 1}] - cutoffs[{i}], in_features // div_value**{i + 1}), "
                             f"n_classes closing the cutoffs; needed when len(cutoffs) > {i}"))
    return tuple(out)


def _asm_example(dt: torch.dtype) -> dict[str, object]:
    g = torch.Generator().manual_seed(0)

    def w(*shape: int) -> torch.Tensor:
        return (torch.rand(shape, generator=g, dtype=torch.float64) - 0.5).to(dt)

    # in_features 4, n_classes 6, cutoffs [2, 4], div_value 2: head (2 + 2, 4),
    # tail 0: (2, 4) and (2, 2); tail 1: (1, 4) and (2, 1).
    return {
        "input": w(3, 4),
        "target": torch.tensor([0, 3, 5]),
        "head.weight": w(4, 4),
        "tail.0.0.weight": w(2, 4),
        "tail.0.1.weight": w(2, 2),
        "tail.1.0.weight": w(1, 4),
        "tail.1.1.weight": w(2, 1),
        "params": {"n_classes": 6, "cutoffs": [2, 4], "div_value": 2.0},
    }


def _tail_hidden(in_features: int, div_value: float, i: int) -> int:
    """``int(in_features // div_value ** (i + 1))``, exactly as torch sizes tail ``i``."""
    rule = f"is {div_value!r}; tail {i} cannot be sized: in_features // div_value**{i + 1}"
    try:
        hidden = int(in_features // (div_value ** (i + 1)))
    except (ZeroDivisionError, OverflowError) as e:
        raise LossError("params.div_value", f"{rule} fails ({e})") from e
    require(hidden <= _MAX_WIDTH, "params.div_value", f"{rule} = {float(hidden):.3g} features, over {_MAX_WIDTH}")
    return hidden


def _check_shape(t: torch.Tensor, name: str, expected: tuple[int, ...], why: str) -> None:
    require(tuple(t.shape) == expected, f"inputs.{name}",
            f"must have shape {list(expected)} ({why}); got {list(t.shape)}")


def _adaptive_logits(bound: Mapping[str, Any], params: Mapping[str, Any]) -> int:
    """The elements of adaptive_log_softmax's head logits (N × its rows) and of its largest tail's (N × that
    cluster's size, at most: a tail sees the rows whose targets fall in its cluster)."""
    input = bound["input"]
    rows = math.prod(input.shape[:-1]) if input.dim() else 0
    tails = [int(t.shape[0]) for name, t in bound.items()
             if name.startswith("tail.") and name.endswith(".1.weight") and isinstance(t, torch.Tensor) and t.dim()]
    return rows * (int(bound["head.weight"].shape[0]) + max(tails, default=0))


@register_loss(
    "adaptive_log_softmax_with_loss",
    work=Work("the head's and a tail's logits (N · (head rows + the largest cluster))", "inputs.input",
              _adaptive_logits),
    aliases=("AdaptiveLogSoftmaxWithLoss", "adaptive_log_softmax"),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",),
              doc="features, (N, in_features) or (in_features)"),
        Input("target", "target", kind="int", aliases=("y_true",),
              doc="class indices in [0, n_classes), (N) or ()"),
        Input("head.weight", "head weight", differentiable=True, aliases=("head_weight",),
              doc="(cutoffs[0] + len(cutoffs), in_features)"),
        Input("head.bias", "head bias", differentiable=True, required=False, aliases=("head_bias",),
              doc="(cutoffs[0] + len(cutoffs)); sent exactly when params.head_bias is true"),
        *_tail_inputs(),
    ),
    params=(
        REDUCTION,
        Param("n_classes", "int", None, "Number of classes (required; torch has no default).",
              min=2, nullable=True),
        Param("cutoffs", "int_list", None,
              f"Increasing cluster boundaries in [1, n_classes - 1] (required; at most {MAX_CLUSTERS}).",
              nullable=True),
        Param("div_value", "float", 4.0, "Tail i projects to in_features // div_value**(i + 1) features.",
              min=0.0, min_exclusive=True),
        Param("head_bias", "bool", False, "Whether the head has a bias (send it as input head.bias)."),
        Param("in_features", "int", None, "Input features; default (null) takes input.shape[-1].",
              min=1, nullable=True),
    ),
    description="Adaptive log-softmax (Grave et al.) NLL, with its head and tail weights as inputs.",
    source="torch.nn.AdaptiveLogSoftmaxWithLoss",
    notes="torch has no functional form: the module is run through torch.func.functional_call with "
    "the sent weights as its parameters. Weight inputs are named like the module's state_dict() "
    "keys. reduction: 'mean' is the module's .loss, 'none' is -.output (per sample), 'sum' is "
    f"-.output summed. At most {MAX_CLUSTERS} tail clusters.",
    example=_asm_example,
    refuses=("class indices outside [0, n_classes)", "missing n_classes or cutoffs, cutoffs not increasing in "
             "[1, n_classes - 1]", "weights missing, unused or shaped unlike the module's",
             f"more than {MAX_CLUSTERS} tail clusters"),
)
def adaptive_log_softmax_with_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    reduction: str,
    n_classes: int | None,
    cutoffs: list[int] | None,
    div_value: float,
    head_bias: bool,
    in_features: int | None,
    **weights: torch.Tensor | None,
) -> torch.Tensor:
    r"""``-log p(target)``, where ``p`` is the head's softmax for shortlist classes and the head's
    cluster probability times the tail's softmax for the others.

    Shapes: input ``(N, in_features)`` or ``(in_features)``; target ``(N)`` or ``()``; head.weight
    ``(cutoffs[0] + n_clusters, in_features)``; tail.i.0.weight ``(h_i, in_features)`` and
    tail.i.1.weight ``(cutoffs[i+1] - cutoffs[i], h_i)`` with ``h_i = in_features // div_value**(i+1)``
    (the last cutoff being n_classes); output scalar, or ``(N)`` / ``()`` for ``reduction='none'``.
    """
    require(n_classes is not None, "params.n_classes", "is required: the number of classes (torch has no default)")
    require(cutoffs is not None, "params.cutoffs",
            "is required: the increasing cluster boundaries, e.g. [10, 100] (torch has no default)")
    assert n_classes is not None and cutoffs is not None
    require(len(cutoffs) >= 1, "params.cutoffs", "must hold at least one cutoff")
    require(len(cutoffs) <= MAX_CLUSTERS, "params.cutoffs",
            f"has {len(cutoffs)} cutoffs; this server accepts at most {MAX_CLUSTERS} tail clusters")
    require(all(1 <= c <= n_classes - 1 for c in cutoffs) and all(a < b for a, b in zip(cutoffs, cutoffs[1:])),
            "params.cutoffs",
            f"is {cutoffs}; must be unique integers in increasing order, each in [1, n_classes - 1] = "
            f"[1, {n_classes - 1}]")

    require(input.dim() in (1, 2), "inputs.input",
            f"must have shape (N, in_features) or (in_features); got {list(input.shape)}")
    features = input.shape[-1]
    if in_features is not None:
        require(in_features == features, "params.in_features",
                f"is {in_features} but input.shape[-1] is {features}; they must agree")
    if input.dim() == 2:
        require(target.dim() == 1 and target.shape[0] == input.shape[0], "inputs.target",
                f"must have shape (N) = ({input.shape[0]}) for input (N, in_features); got {list(target.shape)}")
    else:
        require(target.dim() == 0, "inputs.target",
                f"must be a scalar for unbatched input (in_features); got {list(target.shape)}")
    require_class_indices(target, n_classes)

    bounds = [*cutoffs, n_classes]
    n_clusters = len(cutoffs)
    head_size = cutoffs[0] + n_clusters
    params: dict[str, torch.Tensor] = {}

    head_w = weights["head.weight"]
    assert head_w is not None
    _check_shape(head_w, "head.weight", (head_size, features),
                 f"cutoffs[0] + len(cutoffs) = {head_size} rows, in_features = {features} columns")
    params["head.weight"] = head_w
    head_b = weights["head.bias"]
    if head_bias:
        require(head_b is not None, "inputs.head.bias", "is required when params.head_bias is true")
        assert head_b is not None
        _check_shape(head_b, "head.bias", (head_size,), "cutoffs[0] + len(cutoffs)")
        params["head.bias"] = head_b
    else:
        require(head_b is None, "inputs.head.bias", "was sent but params.head_bias is false; set it to true")

    for i in range(MAX_CLUSTERS):
        proj, out = weights[_proj(i)], weights[_out(i)]
        if i >= n_clusters:
            for name, t in ((_proj(i), proj), (_out(i), out)):
                require(t is None, f"inputs.{name}",
                        f"is not used: cutoffs {cutoffs} make {n_clusters} tail cluster(s), numbered from 0")
            continue
        hidden = _tail_hidden(features, div_value, i)
        size = bounds[i + 1] - bounds[i]
        for name, t, shape, why in (
            (_proj(i), proj, (hidden, features),
             f"in_features // div_value**{i + 1} = {hidden} rows, in_features = {features} columns"),
            (_out(i), out, (size, hidden),
             f"{bounds[i + 1]} - {bounds[i]} = {size} classes in cluster {i}, {hidden} columns"),
        ):
            require(t is not None, f"inputs.{name}", f"is required: cutoffs {cutoffs} make {n_clusters} "
                    f"tail cluster(s); expected shape {list(shape)}")
            assert t is not None
            _check_shape(t, name, shape, why)
            params[name] = t

    module = nn.AdaptiveLogSoftmaxWithLoss(features, n_classes, cutoffs, div_value=div_value,
                                           head_bias=head_bias, device="meta", dtype=input.dtype)
    result = functional_call(module, params, (input, target), strict=True)
    loss: torch.Tensor = result.loss  # functional_call returns Any: the module's _ASMoutput
    output: torch.Tensor = result.output
    if reduction == "mean":
        return loss
    if reduction == "sum":
        return (-output).sum()
    return -output


# ---------------------------------------------------------------------------------------
# linear_cross_entropy


def _lce_example(dt: torch.dtype) -> dict[str, object]:
    return {
        "input": torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], dtype=dt),
        "linear_weight": torch.tensor([[0.2, -0.1, 0.4], [0.3, 0.5, -0.2], [-0.4, 0.1, 0.1], [0.0, 0.2, 0.3]],
                                      dtype=dt),
        "target": torch.tensor([1, 3]),
    }


def _logits(bound: Mapping[str, Any], params: Mapping[str, Any]) -> int:
    """The elements of linear_cross_entropy's logits: ``(*input.shape[:-1], C, d1, ..., dK)``; where torch takes
    its chunked path (``options`` set, a reduction it chunks, no label smoothing, class indices, no d1...dK), the
    logits of one chunk of rows, as torch sizes it."""
    input, weight, target = bound["input"], bound["linear_weight"], bound["target"]
    if not input.dim() or weight.dim() < 2:
        return 0
    rows: int = math.prod(input.shape[:-1])
    options = params.get("options")
    if options is not None and weight.dim() == 2 and params["reduction"] in ("mean", "sum", "none") \
            and params["label_smoothing"] == 0 and not (target.is_floating_point() or target.is_complex()):
        device = torch.device("cpu") if input.device.type == "meta" else input.device
        chunk = _lce_options(options)._adjust(num_batches=max(rows, 1), in_features=int(input.shape[-1]),
                                              num_classes=int(weight.shape[0]), dtype=input.dtype, device=device)
        rows = min(rows, int(chunk.batch_chunk_size))
    return rows * int(math.prod(weight.shape[:-1]))


@register_loss(
    "linear_cross_entropy",
    work=Work("the logits (N · C · d1 ⋯ dK)", "inputs.linear_weight", _logits),
    mean_normalizer="weight",  # 'mean' divides by the total class weight of the samples kept
    aliases=("LinearCrossEntropyLoss",),
    inputs=(
        Input("input", "prediction", differentiable=True, aliases=("y_pred",),
              doc="features, (N, in_features) or (in_features)"),
        Input("linear_weight", "projection weight", differentiable=True,
              doc="(C, in_features), or (C, d1, ..., dK, in_features) for a K-dimensional loss"),
        Input("target", "target", kind="float|int", differentiable=True, aliases=("y_true",),
              doc="class indices (int: (), (N) or (N, d1, ..., dK)) or class probabilities "
                  "(float: (C), (N, C) or (N, C, d1, ..., dK))"),
        Input("linear_bias", "projection bias", differentiable=True, required=False,
              doc="(C) or (C, d1, ..., dK), matching linear_weight"),
        Input("weight", "class weight", required=False, doc="rescaling weight per class, (C)"),
    ),
    params=(
        REDUCTION,
        Param("ignore_index", "int", None,
              "Target value that is ignored; null means -100 for class-index targets and is the only "
              "value allowed with class-probability targets.", nullable=True),
        Param("label_smoothing", "float", 0.0, "Amount of smoothing towards the uniform distribution.",
              max=1.0),
        Param("options", "object", None,
              "torch.nn.LinearCrossEntropyOptions as an object (chunked computation): allow_retain_graph "
              "(bool), batch_chunk_size (int > 0 or null), chunking_method ('auto', 'aspect_ratio[:k]' or "
              "null), acc_policy ('auto', 'accurate', 'balanced', 'compact'), acc_dtype (null, 'float16', "
              "'bfloat16', 'float32', 'float64'); null takes torch's reference path.", nullable=True),
    ),
    description="Cross entropy of a linear projection: cross_entropy(linear(input, W, b), target).",
    source="torch.nn.functional.linear_cross_entropy",
    notes="The class weight gets no gradient (torch cannot differentiate it for class-index targets).",
    example=_lce_example,
    domain=(SMOOTHING,),
    refuses=("class indices outside [0, C) other than ignore_index", "a weight not shaped (C)",
             "class indices of a batched input not shaped (N, d1, ..., dK)",
             "class-probability targets not shaped like the logits, or with ignore_index set",
             "options with unknown keys or values LinearCrossEntropyOptions refuses"),
)
def linear_cross_entropy(
    input: torch.Tensor,
    linear_weight: torch.Tensor,
    target: torch.Tensor,
    linear_bias: torch.Tensor | None,
    weight: torch.Tensor | None,
    *,
    reduction: str,
    ignore_index: int | None,
    label_smoothing: float,
    options: dict[str, Any] | None,
) -> torch.Tensor:
    r"""``cross_entropy(input @ W.T + b, target)``, the logits shaped ``(N, C, d1, ..., dK)``.

    Shapes: input ``(N, in_features)`` or ``(in_features)``; linear_weight ``(C, [d1, ..., dK,]
    in_features)``; target as in cross_entropy; output scalar, or the target's batch shape for
    ``reduction='none'``.
    """
    require(input.dim() in (1, 2), "inputs.input",
            f"must have shape (N, in_features) or (in_features); got {list(input.shape)}")
    require(linear_weight.dim() >= 2, "inputs.linear_weight",
            f"must have shape (C, in_features) or (C, d1, ..., dK, in_features); got {list(linear_weight.shape)}")
    n_classes = linear_weight.shape[0]
    SMOOTHING.check(label_smoothing >= 0)
    if weight is not None:
        require(tuple(weight.shape) == (n_classes,), "inputs.weight",
                f"must have shape [{n_classes}] (C = linear_weight.shape[0]); got {list(weight.shape)}")
    logits_shape = (*input.shape[:-1], n_classes, *linear_weight.shape[1:-1])
    if target.is_floating_point():
        require(ignore_index is None, "params.ignore_index",
                "must be null (unset) with class-probability targets; torch refuses it there")
        require(tuple(target.shape) == logits_shape, "inputs.target",
                f"class-probability targets must have the logits' shape {list(logits_shape)}; "
                f"got {list(target.shape)}")
    else:
        if input.dim() == 2:  # before the projection: torch refuses a mismatch only once it has the logits
            batch = (input.shape[0], *linear_weight.shape[1:-1])
            require(tuple(target.shape) == batch, "inputs.target",
                    f"class indices must have shape {list(batch)} (input's batch N, then linear_weight's "
                    f"d1, ..., dK); got {list(target.shape)}")
        target = class_indices(target)  # torch takes int64 class indices; lossd any integer dtype
        require_class_indices(target, n_classes, -100 if ignore_index is None else ignore_index)
    return F.linear_cross_entropy(input, linear_weight, target, linear_bias=linear_bias, weight=weight,
                                  reduction=reduction, ignore_index=ignore_index,
                                  label_smoothing=label_smoothing, options=_lce_options(options))


_ACC_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
               "float64": torch.float64}


def _lce_options(options: dict[str, Any] | None) -> Any:
    """``params.options`` as torch's ``LinearCrossEntropyOptions``; each key checked, never executed."""
    if options is None:
        return None
    fields = {f.name for f in dataclasses.fields(LinearCrossEntropyOptions)}
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        field = f"params.options.{key}"
        require(key in fields, field, f"is not an option; options: {', '.join(sorted(fields))}")
        if key == "allow_retain_graph":
            require(isinstance(value, bool), field, f"must be true or false, got {value!r}")
        elif key == "batch_chunk_size":
            require(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and float(value).is_integer() and value > 0),
                    field, f"must be a positive integer or null, got {value!r}")
            value = None if value is None else int(value)
        elif key == "acc_dtype":
            require(value is None or value in _ACC_DTYPES, field,
                    f"must be null or one of {', '.join(_ACC_DTYPES)}, got {value!r}")
            value = None if value is None else _ACC_DTYPES[value]
        else:
            require(value is None or isinstance(value, str), field, f"must be a string, got {value!r}")
        kwargs[key] = value
    try:
        return LinearCrossEntropyOptions(**kwargs)
    except (TypeError, ValueError) as e:
        raise LossError("params.options", str(e)) from e
