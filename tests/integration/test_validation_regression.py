"""Regression losses: outside torch's documented domain, computed with a warning (refused when
strict); where torch fails, refused naming the field and the rule.

Each case was seen on torch 2.13 CPU. Every test also checks that the server still
answers afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lossd.client import ServerWarning
from support.refusals import assert_domain_warning, assert_refused, assert_still_serves

f64 = torch.float64


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


_still_serves = assert_still_serves
_refused = assert_refused


@pytest.mark.parametrize("loss", ["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"])
def test_target_with_another_shape_gets_torchs_warning(client: Any, loss: str) -> None:
    # torch broadcasts (4, 1) against (4, 3) and warns; the warning reaches the caller, strict refuses
    with pytest.warns(ServerWarning, match="Using a target size"):
        r = client.evaluate(loss, y_pred=_x(4, 3), y_true=_x(4, 1).abs())
    assert r.value == getattr(torch.nn.functional, loss)(_x(4, 3), _x(4, 1).abs()).item()
    _refused(client, loss, "inputs.target", "the input's shape", y_pred=_x(4, 3), y_true=_x(4, 1).abs(),
             strict=True)


def test_poisson_target_with_another_shape_warns(client: Any) -> None:
    assert_domain_warning(client, "poisson_nll_loss", "inputs.target", "the input's shape",
                          y_pred=_x(4, 3), y_true=_x(4, 1).abs())


@pytest.mark.parametrize("loss", ["l1_loss", "mse_loss", "huber_loss"])
def test_weight_with_another_shape_is_refused(client: Any, loss: str) -> None:
    _refused(client, loss, "inputs", "Weights and input must have the same size",
             y_pred=_x(4, 3), y_true=_x(4, 3, seed=1), weight=torch.ones(3, dtype=f64))


@pytest.mark.parametrize("loss", ["l1", "mae", "L1Loss", "nn.MSELoss", "huber", "HuberLoss", "smooth_l1",
                                  "SmoothL1Loss", "poisson_nll", "PoissonNLLLoss", "gaussian_nll", "GaussianNLLLoss"])
def test_aliases(client: Any, loss: str) -> None:
    kw = {"var": torch.ones(3, dtype=f64)} if "gaussian" in loss.lower() else {}
    r = client.evaluate(loss, _x(3), _x(3, seed=1).abs(), **kw)
    assert r.value is not None and set(r.grads) >= {"y_pred", "y_true"}


def test_weighted_l1_returns_weight_gradient(client: Any) -> None:
    x, y, w = _x(2, 3), _x(2, 3, seed=1), torch.rand(2, 3, dtype=f64) + 0.5
    r = client.evaluate("l1_loss", x, y, weight=w)
    assert set(r.grads) == {"y_pred", "y_true", "weight"}
    assert r.value == pytest.approx(float(((x - y).abs() * w).sum() / w.sum()))


def test_negative_beta_is_refused(client: Any) -> None:
    _refused(client, "smooth_l1_loss", "params.beta", ">= 0", y_pred=_x(3), y_true=_x(3, seed=1), beta=-0.5)


def test_nonpositive_delta_is_refused(client: Any) -> None:
    _refused(client, "huber_loss", "params.delta", "> 0", y_pred=_x(3), y_true=_x(3, seed=1), delta=0.0)


def test_poisson_negative_counts_warn(client: Any) -> None:
    # torch returns a finite loss for a negative Poisson count
    y = torch.tensor([1.0, -2.0, 0.0], dtype=f64)
    r = assert_domain_warning(client, "poisson_nll_loss", "inputs.target", "counts are >= 0", y_pred=_x(3), y_true=y)
    assert r.value == torch.nn.functional.poisson_nll_loss(_x(3), y).item()


def test_poisson_negative_rate_warns(client: Any) -> None:
    # with log_input=false the input is the rate; -eps < rate < 0 gives a finite loss
    assert_domain_warning(client, "poisson_nll_loss", "inputs.input", "rates are >= 0 when log_input is false",
                          y_pred=torch.tensor([-1e-9, 1.0, 2.0], dtype=f64),
                          y_true=torch.tensor([1.0, 2.0, 0.0], dtype=f64), log_input=False)


@pytest.mark.parametrize("loss", ["poisson_nll_loss", "gaussian_nll_loss"])
def test_negative_eps_warns(client: Any, loss: str) -> None:
    # torch computes a negative eps as it is (poisson: inside the log; gaussian: the variance clamp)
    kw = {"var": torch.ones(3, dtype=f64)} if loss.startswith("gaussian") else {}
    x, y = _x(3), _x(3, seed=1).abs()
    r = assert_domain_warning(client, loss, "params.eps", "eps >= 0", y_pred=x, y_true=y, eps=-1e-3, **kw)
    assert r.value == getattr(torch.nn.functional, loss)(x, y, *kw.values(), eps=-1e-3).item()


def test_gaussian_negative_var_is_refused(client: Any) -> None:
    _refused(client, "gaussian_nll_loss", "inputs.var", "negative",
             y_pred=_x(3), y_true=_x(3, seed=1), var=torch.tensor([1.0, -0.5, 2.0], dtype=f64))


def test_gaussian_var_of_wrong_shape_names_var(client: Any) -> None:
    _refused(client, "gaussian_nll_loss", "inputs.var", "var must have the input's shape",
             y_pred=_x(4, 3), y_true=_x(4, 3, seed=1), var=torch.ones(2, 2, dtype=f64))


def test_gaussian_target_of_another_shape_warns(client: Any) -> None:
    # torch broadcasts a (4, 1, 3) target against a (4, 3) input into a (4, 4, 3) loss
    assert_domain_warning(client, "gaussian_nll_loss", "inputs.target", "one dimension equal to 1",
                          y_pred=_x(4, 3), y_true=_x(4, 1, 3, seed=1), var=torch.ones(4, 3, dtype=f64))


def test_gaussian_var_as_a_number(client: Any) -> None:
    r = client.evaluate("gaussian_nll_loss", _x(4, 3), _x(4, 3, seed=1), var=0.5, reduction="sum")
    assert r.value == torch.nn.functional.gaussian_nll_loss(_x(4, 3), _x(4, 3, seed=1), 0.5, reduction="sum").item()
    assert set(r.grads) == {"y_pred", "y_true"}
    _refused(client, "gaussian_nll_loss", "params.var", "negative", y_pred=_x(3), y_true=_x(3, seed=1), var=-1.0)


def test_gaussian_var_gets_a_gradient(client: Any) -> None:
    r = client.evaluate("gaussian_nll_loss", _x(4, 3), _x(4, 3, seed=1), var=torch.rand(4, 1, dtype=f64) + 0.1)
    assert set(r.grads) == {"y_pred", "y_true", "var"} and r.grads["var"].shape == (4, 1)


def test_deprecated_size_average_works_as_in_torch_with_its_warning(client: Any) -> None:
    with pytest.warns(ServerWarning, match="please use reduction='sum'"):
        r = client.evaluate("l1_loss", _x(3), _x(3, seed=1), size_average=False, reduction="none")
    with pytest.warns(UserWarning, match="please use reduction='sum'"):
        expected = torch.nn.functional.l1_loss(_x(3), _x(3, seed=1), size_average=False, reduction="none")
    assert r.value == expected.item()
    _refused(client, "l1_loss", "params.size_average", "use reduction", y_pred=_x(3), y_true=_x(3, seed=1),
             size_average=0)


def test_promotion_as_in_torch(client: Any) -> None:
    """mse_loss(float32, int64) and mse_loss(float64, float32) work in torch: same value, dtype, gradients."""
    for x, y in ((torch.tensor([1.5, 2.0]), torch.tensor([1, 3])), (_x(3), _x(3, seed=1).float())):
        lx, ly = x.clone().requires_grad_(True), y.clone().requires_grad_(y.is_floating_point())
        local = torch.nn.functional.mse_loss(lx, ly)
        leaves = [t for t in (lx, ly) if t.requires_grad]
        grads = torch.autograd.grad(local, leaves)
        r = client.evaluate("mse_loss", x, y)
        assert r.loss.dtype == local.dtype and r.value == local.item()
        for name, g in zip(("y_pred", "y_true"), grads):
            assert r.grads[name].dtype == g.dtype and torch.equal(r.grads[name], g)
        assert set(r.grads) == {n for n, t in (("y_pred", x), ("y_true", y)) if t.is_floating_point()}


def test_gradient_of_an_integer_input_is_refused_naming_it(client: Any) -> None:
    _refused(client, "mse_loss", "grad_inputs[0]", "'y_true' has dtype int64", y_pred=torch.tensor([1.0, 2.0]),
             y_true=torch.tensor([1, 2]), grad_inputs=["y_true"])
