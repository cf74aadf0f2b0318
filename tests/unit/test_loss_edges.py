"""Custom losses at the edges a 2026-12-05 audit found them wrong: half precision where a reference computes in
float32, a probability of exactly 1, and parameter combinations that made NaN silently."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lossd.client import build_request
from lossd.server.losses import REGISTRY, LossError
from lossd.server.rpc import handle_evaluate
from lossd.v1 import lossd_pb2

HALF = (torch.float16, torch.bfloat16)


def _evaluate(loss: str, x: torch.Tensor, t: torch.Tensor, **params: Any) -> lossd_pb2.EvaluateLossResponse:
    return handle_evaluate(REGISTRY, build_request(loss, x, t, **params)[0])


def _grad(reply: lossd_pb2.EvaluateLossResponse) -> torch.Tensor:
    from lossd.client._codec import decode

    return torch.as_tensor(decode(reply.grads["y_pred"]).copy()).double()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_generalized_dice_weights_do_not_overflow_in_float16() -> None:
    """1/T² of 256 half pixels overflowed: every weight 0, the loss 0 and NaN gradients (MONAI: float32)."""
    x = torch.zeros(1, 2, 600)
    x[0, 0, :300], x[0, 1, 300:] = 2.0, 1.0
    t = torch.zeros(1, 600, dtype=torch.long)
    t[0, 290:] = 1
    full = _evaluate("generalized_dice_loss", x, t, mode="multiclass")
    half = _evaluate("generalized_dice_loss", x.half(), t, mode="multiclass")
    assert abs(half.value - full.value) < 5e-3 * full.value, (half.value, full.value)  # before: 0
    assert bool(torch.isfinite(_grad(half)).all())


@pytest.mark.parametrize("dtype", HALF)
def test_lovasz_steps_count_in_float32_for_half_types(dtype: torch.dtype) -> None:
    """float16 counts exactly to 2048 only, bfloat16 to 256: the gradients were noise (rel. error 0.9-3.5)."""
    torch.manual_seed(0)
    x, t = torch.randn(1, 64, 64), (torch.rand(1, 64, 64) > 0.5).float()
    exact = _grad(_evaluate("lovasz_hinge_loss", x.double(), t.double()))
    assert _rel(_grad(_evaluate("lovasz_hinge_loss", x.to(dtype), t.to(dtype))), exact) < 0.02
    xs, ts = torch.randn(1, 3, 64, 64), torch.randint(0, 3, (1, 64, 64))
    exact = _grad(_evaluate("lovasz_softmax_loss", xs.double(), ts))
    assert _rel(_grad(_evaluate("lovasz_softmax_loss", xs.to(dtype), ts)), exact) < 0.02


@pytest.mark.parametrize("dtype", HALF)
def test_ssim_of_half_images_is_computed_in_float32(dtype: torch.dtype) -> None:
    """Variances of small windows cancel in half precision (bfloat16's loss was 0.18 for 0.04)."""
    torch.manual_seed(1)
    x = torch.rand(1, 1, 32, 32).to(dtype)
    y = (x.float() + 0.05 * torch.randn(1, 1, 32, 32)).clamp(0, 1).to(dtype)
    exact = _evaluate("ssim_loss", x.double(), y.double(), window_size=5)
    half = _evaluate("ssim_loss", x, y, window_size=5)
    assert abs(half.value - exact.value) < 0.02 * exact.value, (half.value, exact.value)
    assert _rel(_grad(half), _grad(exact)) < 0.02


@pytest.mark.parametrize("dtype", (*HALF, torch.float32))
def test_sigmoid_focal_loss_of_a_probability_of_one_is_finite(dtype: torch.dtype) -> None:
    """1 - eps rounds to 1 in half precision: the logit of 1 was inf and the loss NaN."""
    p, t = torch.tensor([1.0, 0.0, 0.3], dtype=dtype), torch.tensor([1.0, 0.0, 1.0], dtype=dtype)
    reply = _evaluate("sigmoid_focal_loss", p, t, from_logits=False, reduction="sum")
    assert torch.isfinite(torch.tensor(reply.value)) and bool(torch.isfinite(_grad(reply)).all()), reply.value
    with pytest.raises(LossError, match="params.eps"):
        _evaluate("sigmoid_focal_loss", p, t, from_logits=False, eps=0.0)


def test_tversky_refuses_a_power_of_a_negative_loss() -> None:
    """smooth_nr above smooth_dr can take the index past 1; (1 - index) ** 0.5 was NaN, silently."""
    x, t = torch.tensor([[[4.0, -4.0, 4.0, -4.0]]]), torch.tensor([[[1.0, 0.0, 1.0, 0.0]]])
    for loss, params in (("focal_tversky_loss", {}), ("tversky_loss", {"gamma": 0.5})):
        with pytest.raises(LossError) as err:
            _evaluate(loss, x, t, smooth_nr=1.0, smooth_dr=0.0, **params)
        assert err.value.field == "params.smooth_nr", str(err.value)
    assert _evaluate("tversky_loss", x, t, smooth_nr=1.0, smooth_dr=0.0).value < 0  # gamma 1: as MONAI computes it
