"""Issue 15 through a real server: configured torch.nn modules, the same tensor as two inputs,
complex dtypes on the wire, warnings per request (threads included), strict, integer inputs.

Every expectation is local torch's own result, compared bit for bit.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossd.client import InvalidArgument, ServerWarning, build_request
from lossd.client.torch import RemoteLoss, remote_loss
from lossd.server.evaluation import evaluate
from lossd.server.losses import REGISTRY


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _x(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=_g(seed), dtype=torch.float64).to(dtype)


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------------------------------- modules

MODULES = [
    (nn.CrossEntropyLoss(weight=torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64), label_smoothing=0.1),
     lambda: (_x(4, 3), torch.tensor([0, 2, 1, 2]))),
    (nn.HuberLoss(delta=2.0, reduction="sum"), lambda: (_x(5) * 3, _x(5, seed=1))),
    (nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0, 0.5], dtype=torch.float64)),
     lambda: (_x(3, 2), torch.rand(3, 2, generator=_g(2), dtype=torch.float64))),
    (nn.MultiMarginLoss(p=2, margin=0.5, weight=torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)),
     lambda: (_x(4, 3), torch.tensor([0, 1, 2, 1]))),
    (nn.TripletMarginWithDistanceLoss(distance_function=nn.PairwiseDistance(), margin=0.5),
     lambda: (_x(3, 4), _x(3, 4, seed=1))),
    (nn.PairwiseDistance(p=1.0, keepdim=True), lambda: (_x(3, 4), _x(3, 4, seed=1))),
]


@pytest.mark.parametrize(("module", "make"), MODULES, ids=[type(m).__name__ for m, _ in MODULES])
def test_configured_module_equals_the_module(client: Any, module: nn.Module, make: Any) -> None:
    x, y = make()
    extra = {"negative": _x(3, 4, seed=7)} if isinstance(module, nn.TripletMarginWithDistanceLoss) else {}
    lx = x.clone().requires_grad_(True)
    expected = module(lx, y, *extra.values())
    grad = torch.autograd.grad(expected, lx, torch.ones_like(expected))[0]
    r = client.evaluate(module, x, y, **extra)
    _same(r.loss, expected.detach())
    _same(r.grads["y_pred"], grad)


def test_remote_loss_of_a_module_trains_its_parameters_too(client: Any) -> None:
    """LinearCrossEntropyLoss owns a projection: RemoteLoss sends it and its gradient comes back."""
    torch.manual_seed(0)
    local = nn.LinearCrossEntropyLoss(4, 5, bias=True, dtype=torch.float64)
    remote = nn.LinearCrossEntropyLoss(4, 5, bias=True, dtype=torch.float64)
    remote.load_state_dict(local.state_dict())
    x, y = _x(6, 4), torch.tensor([0, 4, 1, 2, 3, 3])
    local(x, y).backward()
    out = RemoteLoss(remote, client=client)(x, y)
    out.backward()
    assert out.item() == local(x, y).item()
    _same(remote.linear.weight.grad, local.linear.weight.grad)
    _same(remote.linear.bias.grad, local.linear.bias.grad)


def test_other_objects_are_a_type_error_naming_what_is_accepted(client: Any) -> None:
    class MyLoss(nn.MSELoss):
        pass

    for bad in (MyLoss(), nn.Linear(2, 2), lambda a, b: a, 42):
        with pytest.raises(TypeError, match="nn.CrossEntropyLoss"):
            client.evaluate(bad, [1.0], [0.0])
    with pytest.raises(TypeError, match="never runs client code"):
        client.evaluate(nn.TripletMarginWithDistanceLoss(distance_function=nn.CosineSimilarity()),
                        _x(2, 3), _x(2, 3, seed=1), negative=_x(2, 3, seed=2))
    with pytest.raises(TypeError, match="nn.HuberLoss"):
        RemoteLoss(MyLoss(), client=client)


def test_linear_cross_entropy_options(client: Any) -> None:
    from torch.nn.modules.linear_cross_entropy_options import LinearCrossEntropyOptions

    opts = LinearCrossEntropyOptions(batch_chunk_size=2)
    x, w, y = _x(6, 4), _x(5, 4, seed=1), torch.tensor([0, 4, 1, 2, 3, 3])
    lx = x.clone().requires_grad_(True)
    expected = F.linear_cross_entropy(lx, w, y, options=opts)
    grad = torch.autograd.grad(expected, lx)[0]
    r = client.evaluate("linear_cross_entropy", x, y, linear_weight=w, options=opts)
    _same(r.loss, expected.detach())
    _same(r.grads["y_pred"], grad)


# ------------------------------------------------------------------------- the same tensor twice


def test_the_same_tensor_as_two_inputs_gets_the_summed_gradient(client: Any) -> None:
    x = _x(3, 4).log_softmax(-1).requires_grad_(True)
    F.kl_div(x, x, log_target=True, reduction="batchmean").backward()
    local = x.grad.clone()
    x.grad = None
    remote_loss("kl_div", x, x, client=client, params={"log_target": True, "reduction": "batchmean"}).backward()
    _same(x.grad, local)


# ----------------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("encoding", ["raw", "values"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_l1_and_pairwise_distance(client: Any, dtype: torch.dtype, encoding: str) -> None:
    x = torch.complex(_x(3, 4), _x(3, 4, seed=1)).to(dtype)
    y = torch.complex(_x(3, 4, seed=2), _x(3, 4, seed=3)).to(dtype)
    for loss, fn in (("l1_loss", F.l1_loss), ("pairwise_distance", F.pairwise_distance)):
        lx, ly = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        expected = fn(lx, ly)
        gx, gy = torch.autograd.grad(expected, (lx, ly), torch.ones_like(expected))
        request, _ = build_request(loss, x, y, encoding=encoding)
        r = client.evaluate_request(request, as_torch=True)
        _same(r.loss, expected.detach())
        _same(r.grads["y_pred"], gx)
        _same(r.grads["y_true"], gy)


def test_complex_numpy_round_trip(client: Any) -> None:
    x = np.array([1 + 2j, -0.5j], dtype=np.complex128)
    y = np.array([0.5 + 0j, 1 - 1j], dtype=np.complex128)
    r = client.evaluate("l1_loss", x, y, reduction="none")
    assert r.loss.dtype == np.float64
    np.testing.assert_array_equal(r.loss, np.abs(x - y))
    assert r.grads["y_pred"].dtype == np.complex128


@pytest.mark.parametrize("dtype", [torch.int64, torch.int16, torch.uint8])
def test_integer_predictions_where_torch_computes(client: Any, dtype: torch.dtype) -> None:
    a, b = torch.tensor([3, 1, 4], dtype=dtype), torch.tensor([1, 5, 9], dtype=dtype)
    t = torch.tensor([1, 1, 1], dtype=dtype)
    for loss, args in (("margin_ranking_loss", (a, b, t)), ("poisson_nll_loss", (a, b)),
                       ("pairwise_distance", (a[None], b[None]))):
        expected = getattr(F, loss)(*args)
        names = [i.name for i in REGISTRY.get(loss).inputs][: len(args)]
        r = client.evaluate(loss, inputs=dict(zip(names, args)))
        _same(r.loss, expected)
        assert r.grads == {}
    with pytest.raises(InvalidArgument, match=r"grad_inputs\[0\]: input 'input' has dtype int16"):
        client.evaluate("poisson_nll_loss", inputs={"input": a.to(torch.int16), "target": b}, grad_inputs=["input"])


# ---------------------------------------------------------------------------------- warnings


def test_torch_warning_reaches_the_caller(client: Any) -> None:
    x, y = _x(2, 3).log_softmax(-1), _x(2, 3, seed=1).softmax(-1)
    with warnings.catch_warnings(record=True) as local:
        warnings.simplefilter("always")
        expected = F.kl_div(x, y)
    with pytest.warns(ServerWarning) as seen:
        r = client.evaluate("kl_div", x, y)
    assert r.value == expected.item()
    assert [str(w.message) for w in seen] == [str(w.message) for w in local] == r.warnings


def test_no_warning_no_field(client: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = client.evaluate("kl_div", _x(2, 3), _x(2, 3, seed=1).softmax(-1), reduction="batchmean")
    assert r.warnings == []


def test_stream_items_carry_their_own_warnings(client: Any) -> None:
    good = {"loss": "mse_loss", "y_pred": _x(3), "y_true": _x(3, seed=1)}
    warned = {"loss": "mse_loss", "y_pred": _x(3), "y_true": _x(1, seed=1)}
    with pytest.warns(ServerWarning, match="target size"):
        out = client.evaluate_many([good, warned, good, {**warned, "strict": True}])
    assert [o.warnings for o in out[:3]] == [[], [out[1].warnings[0]], []]
    assert "target size" in out[1].warnings[0]
    assert isinstance(out[3], InvalidArgument) and "strict" in out[3].message


def test_concurrent_evaluations_keep_their_warnings_apart() -> None:
    """Threads evaluating at once (as the server's pool does): each gets exactly its own warnings."""
    cases = {
        "kl_mean": ("kl_div", {"input": _x(2, 3), "target": _x(2, 3, seed=1).softmax(-1)}, {}, "reduction: 'mean'"),
        "broadcast": ("mse_loss", {"input": _x(4, 3), "target": _x(3)}, {}, "Using a target size"),
        "signs": ("soft_margin_loss", {"input": _x(3), "target": torch.tensor([1.0, 0.5, -1.0])}, {},
                  "inputs.target: values are 1 or -1"),
        "quiet": ("mse_loss", {"input": _x(4), "target": _x(4, seed=1)}, {}, None),
    }
    errors: list[str] = []
    barrier = threading.Barrier(len(cases) * 2)

    def run(key: str) -> None:
        loss, inputs, params, expected = cases[key]
        barrier.wait()
        for _ in range(50):
            seen = evaluate(REGISTRY, loss, inputs, params).warnings
            ok = seen == [] if expected is None else (len(seen) == 1 and seen[0].startswith(expected))
            if not ok:
                errors.append(f"{key}: {seen}")

    threads = [threading.Thread(target=run, args=(k,)) for k in cases for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:5]


def test_domain_warning_and_strict_for_an_objective(client: Any) -> None:
    terms = [{"loss": "soft_margin_loss"}, {"loss": "mse_loss", "weight": 0.5}]
    x, y = _x(3), torch.tensor([1.0, 0.5, -1.0], dtype=torch.float64)
    with pytest.warns(ServerWarning, match="values are 1 or -1"):
        r = client.evaluate(terms, x, y, grad_inputs=["y_pred"])
    assert r.value == (F.soft_margin_loss(x, y) + 0.5 * F.mse_loss(x, y)).item()
    with pytest.raises(InvalidArgument, match="strict"):
        client.evaluate(terms, x, y, grad_inputs=["y_pred"], strict=True)


def test_numbers_as_numpy_scalars_or_tensors_and_optional_tensors_as_none(client: Any) -> None:
    """Both ways: a number torch takes may come as a numpy scalar or a one-element tensor; a tensor
    argument torch also takes as a number (gaussian var, CTC lengths) as a number or a list."""
    x, y = _x(4), _x(4, seed=1)
    expected = F.huber_loss(x, y, delta=2.0).item()
    assert client.evaluate("huber_loss", x, y, delta=np.float64(2.0)).value == expected
    assert client.evaluate("huber_loss", x, y, delta=torch.tensor(2.0)).value == expected
    assert client.evaluate("cross_entropy", _x(2, 3), torch.tensor([0, 2]), weight=None).value == \
        F.cross_entropy(_x(2, 3), torch.tensor([0, 2]), weight=None).item()
    lp = _x(5, 2, 4).log_softmax(-1)
    tg = torch.tensor([[1, 2], [3, 1]])
    local = F.ctc_loss(lp, tg, [5, 4], [2, 1])
    r = client.evaluate("ctc_loss", lp, tg, params={"input_lengths": [5, 4], "target_lengths": [2, 1]})
    assert r.value == local.item()
    with pytest.raises(InvalidArgument, match="inputs.delta: 'delta' is a parameter"):
        client.evaluate("huber_loss", x, y, delta=torch.ones(2))


def test_evaluate_sums_the_gradients_of_a_tensor_passed_twice(client: Any) -> None:
    x = _x(3, 4).log_softmax(-1)
    leaf = x.clone().requires_grad_(True)
    F.kl_div(leaf, leaf, log_target=True, reduction="sum").backward()
    r = client.evaluate("kl_div", x, x, log_target=True, reduction="sum")
    _same(r.grads["y_pred"], leaf.grad)
    _same(r.grads["y_true"], leaf.grad)


def test_a_backward_torch_refuses_is_a_clear_refusal(client: Any) -> None:
    """huber_loss(float32, float64): torch's forward promotes, its backward refuses; so does lossd
    (INVALID_ARGUMENT on grad_inputs, never INTERNAL). mse_loss's backward takes them: computed."""
    x, y = _x(4, dtype=torch.float32), _x(4, seed=1)
    lx, ly = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="Found dtype Double but expected Float"):
        torch.autograd.grad(F.huber_loss(lx, ly), (lx, ly))
    with pytest.raises(InvalidArgument, match=r"grad_inputs: huber_loss has no gradient .*Found dtype Double"):
        client.evaluate("huber_loss", x, y)
    expected = F.mse_loss(lx, ly)
    gx, gy = torch.autograd.grad(expected, (lx, ly))
    r = client.evaluate("mse_loss", x, y)
    _same(r.loss, expected.detach())
    _same(r.grads["y_pred"], gx)
    _same(r.grads["y_true"], gy)


def test_grad_inputs_naming_one_use_of_a_shared_tensor_gets_the_sum(client: Any) -> None:
    """``kl_div(x, x)`` asking only for y_pred's gradient: still x.grad (both uses), under y_pred alone."""
    x = _x(3, 4).log_softmax(-1)
    leaf = x.clone().requires_grad_(True)
    F.kl_div(leaf, leaf, log_target=True, reduction="sum").backward()
    r = client.evaluate("kl_div", x, x, log_target=True, reduction="sum", grad_inputs=["y_pred"])
    assert list(r.grads) == ["y_pred"]
    _same(r.grads["y_pred"], leaf.grad)


# ------------------------------------------------- beyond a documented bound: computed, with a warning

_T = {"anchor": _x(3, 4), "positive": _x(3, 4, seed=1), "negative": _x(3, 4, seed=2)}
BEYOND_BOUNDS = [
    ("triplet_margin_loss", _T, {"p": 0.0}, "params.p"),
    ("triplet_margin_loss", _T, {"p": -1.0}, "params.p"),
    ("triplet_margin_loss", _T, {"eps": -0.5}, "params.eps"),
    ("pairwise_distance", {"x1": _T["anchor"], "x2": _T["positive"]}, {"eps": -0.5}, "params.eps"),
    ("poisson_nll_loss", {"input": _T["anchor"], "target": _T["positive"].abs()}, {"eps": -0.5}, "params.eps"),
    ("gaussian_nll_loss", {"input": _T["anchor"], "target": _T["positive"], "var": _T["negative"].abs()},
     {"eps": -0.5}, "params.eps"),
    ("multilabel_soft_margin_loss", {"input": _T["anchor"], "target": torch.rand(1, 4, generator=_g(5),
                                                                                dtype=torch.float64)},
     {}, "inputs.target"),
]


@pytest.mark.parametrize(("loss", "inputs", "params", "field"), BEYOND_BOUNDS,
                         ids=[f"{c[0]}-{c[3]}-{list(c[2].values())}" for c in BEYOND_BOUNDS])
def test_beyond_a_documented_bound_torch_computes_it_and_so_does_lossd(
        client: Any, loss: str, inputs: dict[str, torch.Tensor], params: dict[str, Any], field: str) -> None:
    leaves = {n: t.clone().requires_grad_(True) for n, t in inputs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch itself says nothing
        expected = getattr(F, loss)(**leaves, **params)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves.values(), torch.autograd.grad(
        expected, list(leaves.values()), torch.ones_like(expected), allow_unused=True))]  # p = 0: no graph
    with pytest.warns(ServerWarning, match=field.replace(".", r"\.")):
        r = client.evaluate(loss, inputs=inputs, params=params,
                            grad_output=torch.ones_like(expected) if expected.dim() else None)
    _same(r.loss, expected.detach())
    for n, g in zip(leaves, grads):
        _same(r.grads[n], g)
    with pytest.raises(InvalidArgument, match=f"{field.replace('.', '[.]')}.*strict"):
        client.evaluate(loss, inputs=inputs, params=params, strict=True)
