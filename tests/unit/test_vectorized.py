"""Every loss registered ``vectorized`` is bit-identical stacked and one at a time.

:func:`lossd.server.evaluation.evaluate_stacked` runs a group of same-shaped items as one
torch call (``reduction='none'`` on the stacked inputs, then each item's own mean or sum).
This is the proof the registration flag rests on: for every vectorized loss, every float
dtype it supports, every reduction, shapes up to ``MAX_ITEM_ELEMENTS`` per item (0-d
included) and both choices of gradients, each item's loss and gradients equal
:func:`~lossd.server.evaluation.evaluate` of that item alone, bit for bit. And outside what
is proved, the group is refused (``None``: the caller evaluates one by one).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lossd.server.evaluation import MAX_ITEM_ELEMENTS, evaluate, evaluate_stacked
from lossd.server.losses import REGISTRY, TORCH_DTYPES

VECTORIZED = sorted(spec.name for spec in REGISTRY if spec.vectorized)
SHAPES = [(), (1,), (7,), (100,), (3, 33), (2, 3, 5), (MAX_ITEM_ELEMENTS,), (64, MAX_ITEM_ELEMENTS // 64)]
ITEMS = 3


def test_the_vectorized_losses_are_the_proved_ones() -> None:
    """A loss gets ``vectorized=True`` only with this file's proof; the list is what docs/losses.md shows."""
    assert VECTORIZED == ["l1_loss", "mse_loss"]


def _inputs(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    big = torch.randn((ITEMS, *shape), generator=g, dtype=torch.float64) * 10.0 ** torch.randint(
        -3, 4, (ITEMS, *shape), generator=g)  # magnitudes over six decades: rounding shows
    return {"y_pred": big.to(dtype), "y_true": torch.randn((ITEMS, *shape), generator=g, dtype=torch.float64).to(dtype)}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bits (NaN included)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("loss", VECTORIZED)
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_stacked_equals_one_at_a_time_bit_for_bit(loss: str, dtype: str, reduction: str) -> None:
    spec = REGISTRY.get(loss)
    if dtype not in spec.float_dtypes:
        pytest.skip(f"{loss} does not take {dtype}")
    for k, shape in enumerate(SHAPES):
        stacked = _inputs(shape, TORCH_DTYPES[dtype], k)
        for grad_inputs in ((), ("y_pred",)):
            params = {"reduction": reduction}
            result = evaluate_stacked(REGISTRY, loss, stacked, params, grad_inputs)
            assert result is not None, (shape, grad_inputs)
            for i, item in enumerate(result.items()):
                alone = evaluate(REGISTRY, loss, {n: t[i] for n, t in stacked.items()}, params, grad_inputs)
                assert _same(item.loss, alone.loss), (shape, i, item.loss, alone.loss)
                assert item.grads.keys() == alone.grads.keys()
                for name in alone.grads:
                    assert _same(item.grads[name], alone.grads[name]), (shape, i, name)


def _pair(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return {"input": torch.ones(ITEMS, *shape, dtype=dtype), "target": torch.zeros(ITEMS, *shape, dtype=dtype)}


@pytest.mark.parametrize("why, loss, inputs, params", [
    ("an optional input (weight)", "mse_loss", {**_pair((4,)), "weight": torch.ones(ITEMS, 4)}, {}),
    ("inputs of different shapes (broadcasting)", "mse_loss",
     {"input": torch.ones(ITEMS, 4), "target": torch.zeros(ITEMS, 1)}, {}),
    ("more elements per item than the proof covers", "l1_loss", _pair((MAX_ITEM_ELEMENTS + 1,)), {}),
    ("empty items (the mean of nothing: NaN bits torch does not promise)", "mse_loss", _pair((4, 0)), {}),
    ("a loss not registered vectorized", "smooth_l1_loss", _pair((4,)), {}),
    ("mixed float dtypes", "mse_loss", {"input": torch.ones(ITEMS, 4), "target": torch.zeros(ITEMS, 4).double()}, {}),
    ("a refused parameter", "mse_loss", _pair((4,)), {"reduction": "average"}),
    ("an unknown loss", "no_such_loss", _pair((4,)), {}),
])
def test_groups_outside_the_proof_are_evaluated_one_by_one(why: str, loss: str, inputs: dict[str, torch.Tensor],
                                                           params: dict[str, str]) -> None:
    assert evaluate_stacked(REGISTRY, loss, inputs, params, ()) is None, why


def test_a_vectorized_loss_whose_backward_raises_system_exit_falls_back_without_escaping() -> None:
    """A loss's own backward (an autograd.Function, a plugin's) raising SystemExit in the stacked call
    escaped evaluate_stacked and would have ended the server; it falls back to one-by-one evaluation,
    where call_backward answers it as an internal error (LossCrashed)."""
    from lossd.server.evaluation import LossCrashed, evaluate
    from lossd.server.losses import REDUCTION, Input, Registry, register_loss

    class Exits(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            return x * 2

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            raise SystemExit(3)

    reg = Registry()
    register_loss("exits_loss", inputs=(Input("input", "prediction", differentiable=True), Input("target", "target")),
                  params=(REDUCTION,), description="d", vectorized=True, registry=reg,
                  example=lambda dt: {"input": torch.ones(2, dtype=dt), "target": torch.zeros(2, dtype=dt)})(
        lambda input, target, *, reduction: Exits.apply(input - target).mean() if reduction == "mean"
        else Exits.apply(input - target))
    assert evaluate_stacked(reg, "exits_loss", _pair((4,)), {"reduction": "none"}, ("input",)) is None
    with pytest.raises(LossCrashed, match="raised SystemExit"):
        evaluate(reg, "exits_loss", {"input": torch.ones(4), "target": torch.zeros(4)}, {"reduction": "none"})
