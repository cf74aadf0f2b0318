"""Custom losses at the edges a 2026-12-05 audit found them wrong: half precision where a reference computes in
float32, a probability of exactly 1, and parameter combinations that made NaN silently."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from lossd.client import build_request
from lossd.server.evaluation import evaluate
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
@pytest.mark.parametrize("normalization", ["std", "batch_norm"])
def test_barlow_twins_off_diagonal_sum_of_half_views_does_not_overflow(dtype: torch.dtype, normalization: str) -> None:
    """Σ_{i≠j} C_ij² over D² terms passed 65504 in float16 before lambd weighted it: two samples of 1024 features
    (every |C_ij| 1 with 'batch_norm', 1/2 with 'std') gave an inf loss and NaN gradients; 16 × 1024 an inf
    loss for 1456 ('batch_norm'). MONAI sums C - I in float32."""
    g = torch.Generator().manual_seed(0)
    for n, d in ((2, 1024), (16, 1024)):
        x, y = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
        _close_to_float64("barlow_twins_loss", x, y, dtype, normalization=normalization)


@pytest.mark.parametrize("dtype", HALF)
def test_a_wide_wings_half_terms_do_not_overflow(dtype: torch.dtype) -> None:
    """width · log(1 + |x| / curvature) passed 65504 in float16 for width 30000: the mean was inf for 62346."""
    g = torch.Generator().manual_seed(0)
    x, t = 4 * torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    _close_to_float64("wing_loss", x, t, dtype, width=30000.0)


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


@pytest.mark.parametrize("loss", ["dice_loss", "jaccard_loss", "tversky_loss", "focal_tversky_loss",
                                  "generalized_dice_loss"])
@pytest.mark.parametrize("value", [2.0, -2.0, float("nan")])
def test_overlap_losses_refuse_a_mask_outside_0_1(loss: str, value: float) -> None:
    """The mask multiplies probabilities and targets: a weight of 2 made Σ p·t pass Σ p (focal Tversky NaN), -2 made
    dice_loss -287999999."""
    x, t = torch.full((1, 1, 4), 0.9, dtype=torch.float64), torch.ones(1, 1, 4, dtype=torch.float64)
    mask = torch.full((1, 1, 4), value, dtype=torch.float64)
    with pytest.raises(LossError, match=r"\[0, 1\]") as err:  # evaluate: NaN past the wire's finiteness check
        evaluate(REGISTRY, loss, {"input": x, "target": t, "mask": mask}, {"from_logits": False})
    assert err.value.field == "inputs.mask"
    reply = _evaluate(loss, x, t, mask=mask.clamp(0, 1).nan_to_num(0.5) * 0.5, from_logits=False)
    assert 0 <= reply.value <= 1


@pytest.mark.parametrize("loss", ["tversky_loss", "focal_tversky_loss"])
def test_tversky_squared_pred_needs_alpha_equal_to_beta(loss: str) -> None:
    """FP = Σ p² - Σ p·t is negative for p = 0.5, t = 1: the index passed 1 (loss -1, or NaN with gamma 0.75);
    with alpha = beta the denominator is I + alpha·Σ (p - t)², and alpha = beta = 0.5 is dice_loss's."""
    x, t = torch.full((1, 1, 4), 0.5, dtype=torch.float64), torch.ones(1, 1, 4, dtype=torch.float64)
    for params in ({"alpha": 1.0, "beta": 0.0}, {"alpha": 0.3, "beta": 0.7, "gamma": 0.75}):
        with pytest.raises(LossError, match="alpha = beta") as err:
            _evaluate(loss, x, t, from_logits=False, squared_pred=True, **params)
        assert err.value.field == "params.squared_pred"
    g = torch.Generator().manual_seed(4)
    x, t = torch.randn(2, 3, 5, dtype=torch.float64, generator=g), torch.randint(0, 3, (2, 5), generator=g)
    both = {"mode": "multiclass", "squared_pred": True}
    tversky = _evaluate(loss, x, t, alpha=0.5, beta=0.5, gamma=1.0, **both)
    dice = _evaluate("dice_loss", x, t, **both)
    assert tversky.value == pytest.approx(dice.value, rel=1e-12)
    assert torch.allclose(_grad(tversky), _grad(dice), rtol=1e-10, atol=1e-14)


def test_micro_class_weights_weigh_each_class_once() -> None:
    """'micro' multiplied probabilities and targets by the weights, so the intersection carried w²: with weights 3
    the focal Tversky index passed 1 and the loss was NaN. A uniform weight now leaves the index as it is."""
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 4, dtype=torch.float64, generator=g), torch.randint(0, 3, (2, 4), generator=g)
    for loss in ("focal_tversky_loss", "tversky_loss", "dice_loss", "jaccard_loss"):
        plain = _evaluate(loss, x, t, mode="multiclass", aggregation="micro")
        weighted = _evaluate(loss, x, t, mode="multiclass", aggregation="micro", class_weights=[3.0, 3.0, 3.0])
        assert weighted.value == pytest.approx(plain.value, rel=1e-12), loss
        assert torch.allclose(_grad(weighted), _grad(plain), rtol=1e-9, atol=1e-14), loss


@pytest.mark.parametrize(("loss", "params"), [("generalized_dice_loss", {}), ("mcc_loss", {}), ("dice_loss", {}),
                                              ("tversky_loss", {})])
def test_no_class_left_names_include_background(loss: str, params: dict[str, Any]) -> None:
    """include_background false with one class was refused as 'params.classes: leaves no class to score', a field
    generalized_dice_loss and mcc_loss do not have and no request sent."""
    x, t = torch.full((2, 1, 4), 0.5, dtype=torch.float64), torch.ones(2, 1, 4, dtype=torch.float64)
    with pytest.raises(LossError, match="no class to score") as err:
        _evaluate(loss, x, t, mode="multilabel", include_background=False, from_logits=False, **params)
    assert err.value.field == "params.include_background"
    if loss == "dice_loss":  # classes sent: that field is named
        with pytest.raises(LossError, match="no class to score") as err:
            _evaluate(loss, torch.zeros(2, 2, 4), torch.zeros(2, 2, 4), mode="multilabel", include_background=False,
                      classes=[0])
        assert err.value.field == "params.classes"


def test_tversky_smoothing_refusal_names_the_field_sent() -> None:
    """smooth=1 with smooth_dr=0 (smooth_nr not sent) was refused as params.smooth_nr."""
    x, t = torch.tensor([[[4.0, -4.0, 4.0, -4.0]]]), torch.tensor([[[1.0, 0.0, 1.0, 0.0]]])
    with pytest.raises(LossError, match="above smooth_dr 0.0") as err:
        _evaluate("focal_tversky_loss", x, t, smooth=1.0, smooth_dr=0.0)
    assert err.value.field == "params.smooth"
    with pytest.raises(LossError, match="above smooth 0.0") as err:
        _evaluate("focal_tversky_loss", x, t, smooth_nr=1.0)
    assert err.value.field == "params.smooth_nr"


@pytest.mark.parametrize(("n", "dtype"), [(1000, torch.bfloat16), (70000, torch.float16)])
def test_balanced_bce_counts_half_batches_in_float32(n: int, dtype: torch.dtype) -> None:
    """The class counts were cast to the half dtype before β: bfloat16 6% off at 1000 elements, float16 NaN past
    65504."""
    t = torch.zeros(n)
    t[:10] = 1
    _close_to_float64("balanced_binary_cross_entropy_with_logits", torch.linspace(-2, 2, n), t, dtype)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("loss", ["charbonnier_loss", "welsch_loss", "cauchy_loss", "geman_mcclure_loss"])
def test_robust_losses_of_half_residuals_are_computed_in_float32(loss: str, dtype: torch.dtype) -> None:
    """x² overflowed float16 from |x| = 256: charbonnier inf and Cauchy inf for 299 and 10.7, Geman-McClure NaN for 2
    (kornia computes half in float32)."""
    x = torch.tensor([300.0, -400.0, 1e-3, 2.5, -0.7])
    _close_to_float64(loss, x, torch.zeros(5), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_robust_losses_past_the_range_of_the_square(dtype: torch.dtype) -> None:
    """2x²/(x² + 4) was inf/inf = NaN once x² overflowed (Geman-McClure is bounded by 2; kornia's is NaN too),
    Charbonnier and Cauchy inf for finite losses, and sqrt(x² + 1) - 1 cancelled to 0 below 1e-4 in float32."""
    big = 1e20 if dtype == torch.float32 else 1e160
    x, t = torch.tensor([big, -big], dtype=dtype), torch.zeros(2, dtype=dtype)
    expected = {"geman_mcclure_loss": ([2.0, 2.0], [0.0, 0.0]), "charbonnier_loss": ([big - 1, big - 1], [1.0, -1.0]),
                "cauchy_loss": ([2 * math.log(big) - math.log(2)] * 2, [2 / big, -2 / big])}
    for loss, (values, grads) in expected.items():
        reply = _evaluate(loss, x, t, reduction="none")
        from lossd.client._codec import decode

        got = torch.as_tensor(decode(reply.loss).copy()).double()
        assert torch.allclose(got, torch.tensor(values, dtype=torch.float64), rtol=1e-6), (loss, got)
        assert torch.allclose(_grad(reply), torch.tensor(grads, dtype=torch.float64), rtol=1e-6, atol=0), loss
    small = torch.tensor([1e-4, 5e-9], dtype=dtype)
    reply = _evaluate("charbonnier_loss", small, torch.zeros(2, dtype=dtype), reduction="sum")
    assert reply.value == pytest.approx(5e-9 + 1.25e-17, rel=1e-6)


@pytest.mark.parametrize("target", [1.0, 0.999])
def test_mcc_of_a_perfect_half_prediction_has_a_finite_gradient(target: float) -> None:
    """The eps-sized counts' product (1.6e-6) under the square root: NaN gradients in float16 with default params."""
    _close_to_float64("mcc_loss", torch.full((1, 64), target), torch.ones(1, 64), grad_tol=5e-3)
    _close_to_float64("mcc_loss", torch.full((1, 64), target), torch.ones(1, 64), torch.bfloat16, value_tol=0.02)


@pytest.mark.parametrize("loss", ["dice_loss", "jaccard_loss", "tversky_loss", "focal_tversky_loss",
                                  "generalized_dice_loss"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_overlap_sums_over_many_half_pixels_do_not_overflow(loss: str, dtype: torch.dtype) -> None:
    """Σ p and Σ t of a class over 300×300 pixels passed 65504 in float16: dice was NaN, jaccard and tversky
    1.0 (float64: 0.24, 0.39); in bfloat16 the sums lost their last bits. Half inputs are counted in float32."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 300, 300, generator=g)
    t = (torch.rand(1, 2, 300, 300, generator=g) > 0.5).float()
    _close_to_float64(loss, x, t, dtype, mode="multilabel")
