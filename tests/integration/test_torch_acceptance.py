"""Through a real server and the SDK: calls torch accepts are accepted with torch's bits, calls torch
refuses are refused (tests/unit/test_torch_acceptance.py has the grids; this is the wire and the SDK).

Every expectation is local torch's own result, compared as integer views.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossd.client import InvalidArgument, build_request

f64 = torch.float64


def _x(*shape: int, seed: int = 0, dtype: torch.dtype = f64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=f64).to(dtype)


def bits(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().contiguous()
    return t.view({8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[t.element_size()])


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, (a, b)
    assert torch.equal(bits(a), bits(b)), (a, b)


@pytest.mark.parametrize(("legacy", "reduction"), [
    ({"size_average": None}, "sum"), ({"reduce": None}, "none"), ({"size_average": None, "reduce": None}, "none"),
    ({"size_average": None, "reduce": False}, "sum"), ({"size_average": False, "reduce": None}, "none"),
])
def test_null_legacy_args_as_torch(client: Any, legacy: dict[str, Any], reduction: str) -> None:
    x, y = _x(4), _x(4, seed=1)
    lx = x.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = F.mse_loss(lx, y, reduction=reduction, **legacy)
        go = torch.ones_like(expected) if expected.dim() else None
        grad = torch.autograd.grad(expected, lx, torch.ones_like(expected))[0]
        r = client.evaluate("mse_loss", x, y, reduction=reduction, grad_output=go, **legacy)
    same(r.loss, expected.detach())
    same(r.grads["y_pred"], grad)


@pytest.mark.parametrize(("loss", "key"), [("huber_loss", "size_average"), ("ctc_loss", "reduce"),
                                           ("gaussian_nll_loss", "size_average"), ("dice_loss", "reduce")])
def test_legacy_args_refused_where_torch_has_none(client: Any, loss: str, key: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        client.evaluate(loss, _x(2, 3), _x(2, 3, seed=1), **{key: False})
    assert e.value.field == f"params.{key}"
    assert f"{loss} does not take {key}" in str(e.value)


def test_cross_entropy_probability_target_with_negative_ignore_index(client: Any) -> None:
    x, p = _x(3, 4), torch.softmax(_x(3, 4, seed=1), 1)
    lx = x.clone().requires_grad_(True)
    expected = F.cross_entropy(lx, p, ignore_index=-1)
    grad = torch.autograd.grad(expected, lx)[0]
    r = client.evaluate("cross_entropy", x, p, ignore_index=-1)
    same(r.loss, expected.detach())
    same(r.grads["y_pred"], grad)
    with pytest.raises(InvalidArgument, match=r"params\.ignore_index"):
        client.evaluate("cross_entropy", x, p, ignore_index=0)


@pytest.mark.parametrize("as_params", [False, True])
def test_ctc_batch_of_one_with_0d_lengths(client: Any, as_params: bool) -> None:
    lp = _x(5, 1, 4, seed=2).log_softmax(-1)
    tg = torch.tensor([[1, 2]])
    llp = lp.clone().requires_grad_(True)
    expected = F.ctc_loss(llp, tg, torch.tensor(5), torch.tensor(2), reduction="none")
    grad = torch.autograd.grad(expected, llp, torch.ones_like(expected))[0]
    lengths = {"input_lengths": [5], "target_lengths": [2]} if as_params else {
        "input_lengths": torch.tensor(5), "target_lengths": torch.tensor(2)}
    r = client.evaluate("ctc_loss", lp, tg, reduction="none", grad_output=torch.ones(1, dtype=f64), **lengths)
    same(r.loss, expected.detach())
    same(r.grads["y_pred"], grad)


@pytest.mark.parametrize("encoding", ["raw", "values"])
def test_bfloat16_nan_reply_keeps_its_bits(client: Any, encoding: str) -> None:
    x = torch.tensor([math.nan, 1.0, -math.nan], dtype=torch.bfloat16)
    y = torch.zeros(3, dtype=torch.bfloat16)
    go = torch.ones(3, dtype=torch.bfloat16)
    lx = x.clone().requires_grad_(True)
    expected = F.mse_loss(lx, y, reduction="none")
    grad = torch.autograd.grad(expected, lx, go)[0]
    req, _ = build_request("mse_loss", x, y, reduction="none", grad_output=go, allow_non_finite=True,
                           encoding=encoding)
    r = client.evaluate_request(req, as_torch=True)
    same(r.loss, expected.detach())
    same(r.grads["y_pred"], grad)


def test_values_encoding_refuses_int64_a_double_rounds(client: Any) -> None:
    x, y = torch.tensor([2**53 + 1, 0]), torch.tensor([0, 0])
    expected = F.l1_loss(x, y, reduction="none")
    with pytest.raises(ValueError, match=r"inputs\.y_pred: int64 value 9007199254740993 .*use encoding='raw'"):
        client.evaluate("l1_loss", x, y, reduction="none", encoding="values")
    with pytest.raises(ValueError, match="use encoding='raw'"):
        client.evaluate("l1_loss", np.array([0, -(2**53) - 1]), y, reduction="none", encoding="values")
    r = client.evaluate("l1_loss", x, y, reduction="none")  # raw: exact
    same(r.loss, expected)


@pytest.mark.parametrize("p", [math.inf, -math.inf])
def test_pairwise_distance_and_triplet_take_an_infinite_norm_degree(client: Any, p: float) -> None:
    a, b, c = _x(3, 5), _x(3, 5, seed=1), _x(3, 5, seed=2)
    la = a.clone().requires_grad_(True)
    dist = F.pairwise_distance(la, b, p=p)
    dist_grad = torch.autograd.grad(dist, la, torch.ones_like(dist))[0]
    triplet = F.triplet_margin_loss(la, b, c, p=p)
    triplet_grad = torch.autograd.grad(triplet, la)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # p = -inf: lossd's domain warning for the triplet loss (p <= 0)
        for _ in range(2):  # the second call of a signature takes its plan
            r = client.evaluate("pairwise_distance", a, b, p=p, grad_output=torch.ones(3, dtype=f64))
            same(r.loss, dist.detach())
            same(r.grads["y_pred"], dist_grad)
            r = client.evaluate("triplet_margin_loss", a, b, negative=c, p=p)
            same(r.loss, triplet.detach())
            same(r.grads["y_pred"], triplet_grad)
        module = client.evaluate(torch.nn.PairwiseDistance(p=p), a, b, grad_output=torch.ones(3, dtype=f64))
        same(module.loss, dist.detach())
        item = {"loss": "triplet_margin_loss", "inputs": {"anchor": a, "positive": b, "negative": c},
                "params": {"p": p}}
        for outcome in client.evaluate_many([item] * 3, raise_on_error=True):
            same(outcome.loss, triplet.detach())
            same(outcome.grads["anchor"], triplet_grad)


def test_infinity_still_refused_where_torch_has_no_use_for_it(client: Any) -> None:
    a, b = _x(3, 5), _x(3, 5, seed=1)
    for loss, params in (("pairwise_distance", {"p": math.nan}), ("triplet_margin_loss", {"margin": math.inf}),
                         ("smooth_l1_loss", {"beta": math.inf})):
        extra = {"negative": a} if loss == "triplet_margin_loss" else {}
        with pytest.raises(InvalidArgument, match=r"numbers must be finite \(NaN and Infinity cannot be parameters\)"):
            client.evaluate(loss, a, b, allow_non_finite=True, **extra, **params)
