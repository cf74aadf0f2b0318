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


def _close_to_float64(loss: str, x: torch.Tensor, t: torch.Tensor, dtype: torch.dtype = torch.float16, *,
                      value_tol: float = 5e-3, grad_tol: float = 0.02, **params: Any) -> None:
    """``loss`` of ``x`` and ``t`` in ``dtype`` (float tensors cast; integer ones sent as they are) is finite, its
    gradient too, and both are close to float64's on the same (rounded) values."""
    def cast(v: Any, dt: torch.dtype) -> Any:
        return v.to(dtype).to(dt) if isinstance(v, torch.Tensor) and v.is_floating_point() else v

    half = _evaluate(loss, cast(x, dtype), cast(t, dtype), **{k: cast(v, dtype) for k, v in params.items()})
    exact = _evaluate(loss, cast(x, torch.float64), cast(t, torch.float64),
                      **{k: cast(v, torch.float64) for k, v in params.items()})
    grad = _grad(half)
    assert torch.isfinite(torch.tensor(half.value)) and bool(torch.isfinite(grad).all()), (half.value, exact.value)
    assert abs(half.value - exact.value) <= value_tol * abs(exact.value), (half.value, exact.value)
    assert _rel(grad, _grad(exact)) < grad_tol


def test_psnr_of_close_half_images_does_not_overflow() -> None:
    """max_val² / MSE overflowed float16 past 48 dB: the loss was -inf and the gradient NaN (NaN from 36 dB)."""
    torch.manual_seed(2)
    x = torch.rand(1, 3, 16, 16)
    y = x + 0.003 * torch.sign(torch.randn(1, 3, 16, 16))  # about 50 dB
    _close_to_float64("psnr_loss", x, y)


@pytest.mark.parametrize("dtype", HALF)
def test_global_mutual_information_of_its_half_example_has_finite_gradients(dtype: torch.dtype) -> None:
    """smooth_nr (1e-7) and the joint probabilities lost in float16: NaN gradients on the loss's own example."""
    inputs, params = REGISTRY.get("global_mutual_information_loss").example_inputs(torch.float32)
    _close_to_float64("global_mutual_information_loss", inputs["input"], inputs["target"], dtype, **params)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    _close_to_float64("global_mutual_information_loss", x, x**2, dtype, kernel_type="b-spline", num_bins=16)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("loss", ["soft_cldice_loss", "soft_dice_cldice_loss"])
def test_cldice_sums_over_many_half_pixels_do_not_overflow(loss: str, dtype: torch.dtype) -> None:
    """Σ p + Σ t, and the skeletons' sums, over 256² pixels passed 65504 in float16: the loss was 1, its gradient 0
    (bfloat16: 2% off)."""
    x = torch.full((1, 1, 256, 256), 0.5)
    t = torch.zeros(1, 1, 256, 256)
    t[..., :128, :] = 1
    if loss == "soft_dice_cldice_loss":
        _close_to_float64(loss, x, t, dtype)
    stripes = torch.zeros(1, 2, 256, 256)  # one-pixel lines: their own skeletons, 2^16 pixels over both classes
    stripes[:, 0, ::2] = 1
    stripes[:, 1] = 1 - stripes[:, 0]
    _close_to_float64(loss, stripes * 0.8 + 0.1, stripes, dtype)


def test_generalized_wasserstein_dice_of_many_half_pixels_does_not_overflow() -> None:
    """True positives and denominators over 256² pixels overflowed float16 (a loss of 1, zero gradients), and GDL's
    weight of a class past 65504 pixels was 1 / inf = 0 (0.33 for 0.14)."""
    g = torch.Generator().manual_seed(0)
    logits, idx = torch.randn(1, 2, 256, 256, generator=g), (torch.rand(1, 256, 256, generator=g) > 0.5).long()
    m = torch.tensor([[0.0, 1], [1, 0]])
    _close_to_float64("generalized_wasserstein_dice_loss", logits, idx, dist_matrix=m)
    idx = torch.zeros(1, 300, 300, dtype=torch.long)
    idx[:, :100, :100] = 1  # class 0: 80000 pixels, predicted well; class 1: 10000, at random
    logits = torch.randn(1, 2, 300, 300, generator=g) + 3 * torch.stack([1 - 2 * idx, 2 * idx - 1], 1) * (idx == 0)
    _close_to_float64("generalized_wasserstein_dice_loss", logits, idx, dist_matrix=m, weighting_mode="GDL")


@pytest.mark.parametrize("dtype", HALF)
def test_nacl_cross_entropy_of_many_half_pixels_is_computed_in_float32(dtype: torch.dtype) -> None:
    """torch's float16 cross-entropy breaks past 65504 targets (0 here): the loss was 0.09 for 0.99 (bfloat16:
    0.984)."""
    g = torch.Generator().manual_seed(0)
    logits, idx = torch.randn(1, 2, 256, 256, generator=g), (torch.rand(1, 256, 256, generator=g) > 0.5).long()
    _close_to_float64("nacl_loss", logits, idx, dtype)


def test_hausdorff_dt_distances_stay_in_float32_for_half_inputs() -> None:
    """Distances of ~270 pixels squared (73000) overflowed float16: the loss inf, 13009 non-finite gradients."""
    t = torch.zeros(1, 1, 200, 200)
    t[..., :4, :4] = 1
    _close_to_float64("hausdorff_dt_loss", t * 0.9 + 0.05, t)
    _close_to_float64("hausdorff_dt_loss", t * 0.9 + 0.05, t, log=True)


@pytest.mark.parametrize("dtype", HALF)
def test_lncc_window_sums_of_half_images_do_not_overflow(dtype: torch.dtype) -> None:
    """Window sums of x² for [0, 255] images and a 41³ window volume overflowed float16: NaN loss and gradients
    (bfloat16: the variances cancel, 2% off)."""
    x = torch.randint(0, 256, (1, 1, 8, 8), generator=torch.Generator().manual_seed(0)).float()
    _close_to_float64("lncc_loss", x, 255 - x, dtype)
    v = torch.rand(1, 1, 12, 12, 12, generator=torch.Generator().manual_seed(1))
    _close_to_float64("lncc_loss", v, v.sqrt(), dtype, kernel_size=41)


@pytest.mark.parametrize("loss", ["giou_loss", "diou_loss", "ciou_loss"])
def test_box_areas_past_the_float16_range_do_not_overflow(loss: str) -> None:
    """Pixel boxes of 300×300 have areas past 65504: inf - inf made the loss and gradients NaN in float16."""
    a = torch.tensor([[100.0, 100.0, 400.0, 400.0], [10.0, 20.0, 300.0, 330.0]])
    b = torch.tensor([[120.0, 110.0, 420.0, 380.0], [0.0, 0.0, 280.0, 350.0]])
    _close_to_float64(loss, a, b)


@pytest.mark.parametrize("loss", ["soft_cldice_loss", "soft_dice_cldice_loss", "asymmetric_focal_loss",
                                  "asymmetric_focal_tversky_loss", "asymmetric_unified_focal_loss"])
def test_an_integer_one_hot_target_shaped_like_input_is_a_mask(loss: str) -> None:
    """docs: the target is float or integer, shaped like input (one-hot or mask) or class indices (N, *spatial);
    an integer one-hot was refused with "shape [1, 2, 4, 4] must be [1, 4, 4] (class indices) or [1, 2, 4, 4]"."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64, generator=g)
    idx = torch.randint(0, 2, (1, 4, 4), generator=g)
    onehot = torch.nn.functional.one_hot(idx, 2).movedim(-1, 1)
    expected = _evaluate(loss, x, onehot.double())
    for target in (onehot.to(torch.uint8), onehot, idx.to(torch.uint8), idx):
        reply = _evaluate(loss, x, target)
        assert reply.value == expected.value, (target.dtype, list(target.shape))
        assert torch.equal(_grad(reply), _grad(expected))
    with pytest.raises(LossError, match="0 or 1") as err:
        _evaluate(loss, x, onehot * 2)
    assert err.value.field == "inputs.target"
    with pytest.raises(LossError, match=r"must be \[1, 4, 4\] \(class indices\) or \[1, 2, 4, 4\] \(") as err:
        _evaluate(loss, x, onehot[..., :3])
    assert err.value.field == "inputs.target"


@pytest.mark.parametrize("loss, params", [("dice_loss", {"mode": "multiclass"}), ("boundary_loss", {"mode": "multiclass"}),
                                          ("generalized_dice_loss", {"mode": "multiclass"}),
                                          ("tversky_loss", {"mode": "multiclass"})])
def test_multiclass_overlap_losses_take_integer_one_hot_and_narrow_class_indices(loss: str, params: Any) -> None:
    """The overlap losses' multiclass targets (``_overlap._probabilities``): an integer one-hot shaped like input was
    refused with "shape [1, 3, 4, 4] must be [1, 4, 4] (class indices) or [1, 3, 4, 4] (one-hot)", and uint8 or
    int32 class indices with torch's "one_hot is only applicable to index tensor of type LongTensor"."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64, generator=g)
    idx = torch.randint(0, 3, (1, 4, 4), generator=g)
    onehot = torch.nn.functional.one_hot(idx, 3).movedim(-1, 1)
    expected = _evaluate(loss, x, onehot.double(), **params)
    for target in (onehot.to(torch.uint8), onehot, idx.to(torch.uint8), idx.to(torch.int32), idx):
        reply = _evaluate(loss, x, target, **params)
        assert reply.value == expected.value, (target.dtype, list(target.shape))
        assert torch.equal(_grad(reply), _grad(expected))
    with pytest.raises(LossError, match="0 or 1") as err:
        _evaluate(loss, x, onehot * 2, **params)
    assert err.value.field == "inputs.target"


@pytest.mark.parametrize("loss", ["asymmetric_focal_tversky_loss", "asymmetric_unified_focal_loss"])
def test_focal_tversky_sums_over_many_half_pixels_do_not_overflow(loss: str) -> None:
    """TP + delta·FN + (1 - delta)·FP of a class past 65504 pixels overflowed float16: 0.5 for 0.79, NaN gradients."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 400, 400, generator=g)
    _close_to_float64(loss, x / x.sum(1, keepdim=True), (torch.rand(1, 400, 400, generator=g) > 0.1).long())
