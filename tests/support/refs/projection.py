"""Losses with their own weights: references in local torch and test cases.

The class-form references build the ``torch.nn`` module with the right sizes, copy the
test tensors into its parameters and run it; :class:`_ThroughModule` hands the gradients
the module's parameters receive back to the test's tensors, so the parity harness compares
every weight's gradient. The functional references run a fresh module through
``torch.func.functional_call`` (adaptive log-softmax has no functional form) or call
``F.linear_cross_entropy``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from support.parity import Case, Reference, rand, randint, randn

Run = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]


class _ThroughModule(torch.autograd.Function):
    """``run(values)`` computes with a module's own parameters; gradients go back to the inputs.

    ``run`` gets detached copies of the floating tensors and returns the output plus, by
    name, the tensor whose gradient is that input's (a module parameter, or the copy itself).
    """

    @staticmethod
    def forward(ctx: Any, run: Run, names: tuple[str, ...], *tensors: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            out, sources = run({n: t.detach() for n, t in zip(names, tensors)})
        ctx.out = out
        ctx.sources = [sources.get(n) for n in names]
        ctx.shapes = [t.shape for t in tensors]
        return out.detach()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        wanted = [k for k, s in enumerate(ctx.sources) if s is not None and ctx.needs_input_grad[k + 2]]
        found = torch.autograd.grad(ctx.out, [ctx.sources[k] for k in wanted], grad, allow_unused=True)
        grads: list[torch.Tensor | None] = [None] * len(ctx.sources)
        for k, g in zip(wanted, found):
            grads[k] = None if g is None else g.reshape(ctx.shapes[k])
        return (None, None, *grads)


def through_module(t: Mapping[str, torch.Tensor], run: Run) -> torch.Tensor:
    """Call ``run`` on the floating tensors of ``t`` with gradients routed back to them."""
    names = tuple(n for n, v in t.items() if v.is_floating_point())
    return _ThroughModule.apply(run, names, *(t[n] for n in names))


def _leaf(v: torch.Tensor) -> torch.Tensor:
    return v.clone().requires_grad_(True)


# ---------------------------------------------------------------------------------------
# adaptive_log_softmax_with_loss

_ASM_CTOR = ("n_classes", "cutoffs", "div_value", "head_bias")


def _asm_build(t: Mapping[str, torch.Tensor], p: Mapping[str, Any]) -> nn.AdaptiveLogSoftmaxWithLoss:
    kwargs = {k: p[k] for k in _ASM_CTOR if k in p}
    return nn.AdaptiveLogSoftmaxWithLoss(t["input"].shape[-1], dtype=t["input"].dtype, **kwargs)


def _asm_reduce(result: Any, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return result.loss
    if reduction == "sum":
        return (-result.output).sum()
    return -result.output


def _asm_weights(t: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in t.items() if k not in ("input", "target")}


def _asm_functional(t: Mapping[str, torch.Tensor], p: Mapping[str, Any]) -> torch.Tensor:
    module = _asm_build(t, p)
    result = functional_call(module, _asm_weights(t), (t["input"], t["target"]), strict=True)
    return _asm_reduce(result, p.get("reduction", "mean"))


def _asm_module(t: Mapping[str, torch.Tensor], p: Mapping[str, Any]) -> torch.Tensor:
    def run(values: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        module = _asm_build(t, p)
        params = dict(module.named_parameters())
        assert set(params) == set(_asm_weights(t)), sorted(params)
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(values[name])
        x = _leaf(values["input"])
        out = _asm_reduce(module(x, t["target"]), p.get("reduction", "mean"))
        return out, {"input": x, **params}

    return through_module(t, run)


def _asm_tensors(in_features: int, n_classes: int, cutoffs: list[int], div_value: float, head_bias: bool,
                 target: list[int] | int, batch: int | None, seed: int = 0):
    """Input, target and weights (scaled like torch's init) for one module layout."""

    def make(dt: torch.dtype) -> dict[str, torch.Tensor]:
        shape = (batch, in_features) if batch is not None else (in_features,)
        t = {"input": randn(*shape, dtype=dt, seed=seed), "target": torch.tensor(target)}
        bounds = [*cutoffs, n_classes]
        head = cutoffs[0] + len(cutoffs)
        t["head.weight"] = randn(head, in_features, dtype=dt, seed=seed + 1) * 0.5
        if head_bias:
            t["head.bias"] = randn(head, dtype=dt, seed=seed + 2) * 0.5
        for i in range(len(cutoffs)):
            hidden = int(in_features // (div_value ** (i + 1)))
            t[f"tail.{i}.0.weight"] = randn(hidden, in_features, dtype=dt, seed=seed + 10 + i) * 0.5
            t[f"tail.{i}.1.weight"] = randn(bounds[i + 1] - bounds[i], hidden, dtype=dt, seed=seed + 20 + i) * 0.5
        return t

    return make


# ---------------------------------------------------------------------------------------
# linear_cross_entropy


def _lce_kwargs(t: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    return {"linear_bias": t.get("linear_bias"), "weight": t.get("weight")}


def _lce_module(t: Mapping[str, torch.Tensor], p: Mapping[str, Any]) -> torch.Tensor:
    w, b = t["linear_weight"], t.get("linear_bias")

    def run(values: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        module = nn.LinearCrossEntropyLoss(
            w.shape[-1], w.shape[0], out_features=tuple(w.shape[1:-1]), bias=b is not None, dtype=w.dtype,
            weight=t.get("weight"), **p,
        )
        with torch.no_grad():
            module.linear.weight.copy_(values["linear_weight"].reshape(module.linear.weight.shape))
            if b is not None:
                module.linear.bias.copy_(values["linear_bias"].reshape(module.linear.bias.shape))
        x = _leaf(values["input"])
        target = _leaf(values["target"]) if t["target"].is_floating_point() else t["target"]
        out = module(x, target)
        sources = {"input": x, "linear_weight": module.linear.weight}
        if b is not None:
            sources["linear_bias"] = module.linear.bias
        if target.is_floating_point():
            sources["target"] = target
        return out, sources

    return through_module(t, run)


REFERENCES = {
    "adaptive_log_softmax_with_loss": Reference(functional=_asm_functional, module=_asm_module),
    "linear_cross_entropy": Reference(
        functional=lambda t, p: F.linear_cross_entropy(t["input"], t["linear_weight"], t["target"],
                                                       **_lce_kwargs(t), **p),
        module=_lce_module,
    ),
}


def _asm_case(id: str, params: dict[str, Any], target: list[int] | int, batch: int | None, in_features: int = 8,
              seed: int = 0) -> Case:
    full = {"div_value": 4.0, "head_bias": False, **params}
    make = _asm_tensors(in_features, full["n_classes"], full["cutoffs"], full["div_value"], full["head_bias"],
                        target, batch, seed)
    return Case(id, make, params=params)


def _lce(input_shape: tuple[int, ...], weight_shape: tuple[int, ...], target: Callable[[torch.dtype], torch.Tensor],
         bias: bool = False, class_weight: bool = False, seed: int = 0):
    def make(dt: torch.dtype) -> dict[str, torch.Tensor]:
        t = {"input": randn(*input_shape, dtype=dt, seed=seed),
             "linear_weight": randn(*weight_shape, dtype=dt, seed=seed + 1) * 0.5,
             "target": target(dt)}
        if bias:
            t["linear_bias"] = randn(*weight_shape[:-1], dtype=dt, seed=seed + 2) * 0.5
        if class_weight:
            t["weight"] = rand(weight_shape[0], dtype=dt, seed=seed + 3, low=0.5, high=2.0)
        return t

    return make


def _probs(*shape: int, seed: int = 0, dim: int = 0) -> Callable[[torch.dtype], torch.Tensor]:
    return lambda dt: torch.softmax(randn(*shape, dtype=torch.float64, seed=seed), dim).to(dt)


CASES = {
    "adaptive_log_softmax_with_loss": [
        _asm_case("two-clusters", {"n_classes": 10, "cutoffs": [3, 6], "div_value": 2.0},
                  target=[0, 4, 9, 2, 6, 5], batch=6),
        _asm_case("head-bias-one-cluster-in-features",
                  {"n_classes": 7, "cutoffs": [4], "head_bias": True, "in_features": 8},
                  target=[6, 1, 4, 3, 5], batch=5, seed=1),
        _asm_case("unused-cluster", {"n_classes": 12, "cutoffs": [2, 5, 9], "div_value": 1.5},
                  target=[0, 3, 1, 4, 10, 11], batch=6, seed=2),
        _asm_case("unbatched-tail", {"n_classes": 9, "cutoffs": [2, 6], "div_value": 2.0, "head_bias": True},
                  target=7, batch=None, seed=3),
        _asm_case("zero-width-tail", {"n_classes": 8, "cutoffs": [3, 5]},
                  target=[4, 7, 0, 3], batch=4, in_features=6, seed=4),  # tail 1: 6 // 16 = 0 features
        _asm_case("batch-of-one", {"n_classes": 6, "cutoffs": [1, 3], "div_value": 2.0},
                  target=[5], batch=1, seed=5),
    ],
    "linear_cross_entropy": [
        Case("indices", _lce((4, 3), (5, 3), lambda dt: randint(5, 4))),
        Case("bias-weight-ignore-smoothing", _lce((6, 4), (5, 4), lambda dt: torch.tensor([0, 3, -1, 1, 4, 2]),
                                                  bias=True, class_weight=True, seed=1),
             params={"ignore_index": -1, "label_smoothing": 0.2}),
        Case("default-ignore-index", _lce((4, 3), (4, 3), lambda dt: torch.tensor([1, -100, 3, 0]), seed=2)),
        Case("probabilities-bias", _lce((4, 3), (5, 3), _probs(4, 5, seed=3, dim=1), bias=True, seed=3),
             params={"label_smoothing": 0.1}),
        Case("k-dimensional", _lce((4, 3), (5, 2, 3), lambda dt: randint(5, 4, 2, seed=4), bias=True,
                                   class_weight=True, seed=4)),
        Case("k-dimensional-probabilities", _lce((3, 4), (5, 2, 4), _probs(3, 5, 2, seed=5, dim=1), seed=5)),
        Case("unbatched", _lce((3,), (5, 3), lambda dt: torch.tensor(2), bias=True, seed=6),
             params={"label_smoothing": 0.3}),
        Case("unbatched-probabilities", _lce((3,), (4, 3), _probs(4, seed=7), seed=7)),
    ],
}
