"""Losses lossd defines: gradcheck in float64, the focal traps, and their input rules."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lossd._wire import FieldError
from lossd.server import evaluate
from lossd.server.losses import REGISTRY, LossError
from lossd.server.losses._focal import modulating_factor
from support.refs import CASES
from support.refs import (adversarial, auc, boundary, boxes, calibration, cldice, custom, deformation, image, lovasz,
                          registration, robust, robust_classification, similarity, spectral, unified_focal,
                          wasserstein_dice)

#: Every loss lossd defines (not a torch.nn loss): their references are formulas, not torch calls.
CUSTOM = {name: ref for module in (custom, robust, boxes, image, lovasz, similarity, robust_classification, boundary,
                                   cldice, wasserstein_dice, unified_focal, calibration, auc, spectral, deformation,
                                   registration, adversarial)
          for name, ref in module.REFERENCES.items()}

# CIoU's trade-off weight alpha is a constant by definition (no gradient, as in the paper and torchvision),
# so its gradient is not the derivative of its value; the parity test checks it against the reference's autograd.
NOT_THE_DERIVATIVE = {"complete_box_iou_loss"}

GRADCHECK = [
    pytest.param(name, case, id=f"{name}-{case.id}") for name in CUSTOM if name not in NOT_THE_DERIVATIVE
    for case in CASES[name]
]


def _hard_labels(t: torch.Tensor) -> bool:
    """0/1 labels (and ignore_index values) sit on the edge of their domain, and soft labels in [0, 1] with some
    exactly 0 or 1 (MONAI's per-class alpha weighs the 1s) on the edge or a step; finite differences would leave it."""
    in_unit = bool(((t >= 0) & (t <= 1)).all())
    return bool((t == t.round()).all()) or (in_unit and bool(((t == 0) | (t == 1)).any()))


@pytest.mark.parametrize(("name", "case"), GRADCHECK)
def test_gradcheck_float64(name: str, case: Any) -> None:
    spec = REGISTRY.get(name)
    tensors = case.make(torch.float64)
    params = {p.name: p.default for p in spec.params} | case.params
    diff = [n for n, t in tensors.items() if spec.input(n).differentiable and t.is_floating_point()  # type: ignore[union-attr]
            and not _hard_labels(t)]
    fixed = {n: t for n, t in tensors.items() if n not in diff}

    def fn(*leaves: torch.Tensor) -> torch.Tensor:
        kwargs = {i.name: None for i in spec.inputs} | fixed | dict(zip(diff, leaves))
        return spec.fn(**kwargs, **params)

    leaves = tuple(tensors[n].clone().requires_grad_() for n in diff)
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.9])
def test_fractional_gamma_with_saturated_logits_has_finite_gradients(gamma: float) -> None:
    logits = torch.tensor([40.0, -40.0, 20.0, 0.3], dtype=torch.float32)
    target = torch.tensor([1.0, 0.0, 1.0, 1.0])
    r = evaluate(REGISTRY, "sigmoid_focal_loss", {"input": logits, "target": target}, {"gamma": gamma})
    assert torch.isfinite(r.loss) and torch.isfinite(r.grads["input"]).all()
    probs = torch.tensor([1.0, 0.0, 0.999999, 0.6])
    r = evaluate(REGISTRY, "binary_focal_loss", {"input": probs, "target": target}, {"gamma": gamma})
    assert torch.isfinite(r.grads["input"]).all()
    r = evaluate(REGISTRY, "softmax_focal_loss", {"input": torch.tensor([[60.0, -60.0]]), "target": torch.tensor([0])},
                 {"gamma": gamma})
    assert torch.isfinite(r.grads["input"]).all()


@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("name", ["tversky_loss", "focal_tversky_loss"])
@pytest.mark.parametrize("params", [{}, {"gamma_on": "mean"}, {"aggregation": "per_sample", "mode": "multilabel"}])
def test_fractional_gamma_tversky_on_a_perfect_prediction_has_finite_gradients(
        name: str, gamma: float, params: dict[str, Any]) -> None:
    """Saturated logits: the index is exactly 1, (1 - index)^gamma has an infinite derivative at 0."""
    logits = torch.tensor([[[40.0, -40.0, 40.0]], [[-40.0, 40.0, 40.0]]])
    target = (logits > 0).float()
    r = evaluate(REGISTRY, name, {"input": logits, "target": target}, {"gamma": gamma} | params)
    assert r.loss.item() == 0.0 and torch.isfinite(r.grads["input"]).all()


_SATURATED = torch.tensor([[[[40.0, -40.0], [-40.0, 40.0]], [[-40.0, 40.0], [40.0, -40.0]]]], dtype=torch.float64)
_HARD = (_SATURATED > 0).double()


@pytest.mark.parametrize(
    ("name", "inputs", "params"),
    [
        ("asymmetric_focal_tversky_loss", {"input": _HARD, "target": _HARD}, {"gamma": 0.5}),
        ("asymmetric_unified_focal_loss", {"input": _HARD, "target": _HARD}, {"epsilon": 1e-12}),
        ("asymmetric_focal_loss", {"input": _HARD, "target": _HARD}, {"gamma": 0.5}),
        ("sigmoid_focal_loss", {"input": _SATURATED, "target": _HARD},
         {"focal_form": "logit", "alpha": -1.0, "class_alpha": [0.3, 0.7], "gamma": 0.5}),
        ("generalized_wasserstein_dice_loss", {"input": 2 * _SATURATED, "target": _HARD[:, 1].long(),
                                               "dist_matrix": torch.tensor([[0.0, 1.0], [1.0, 0.0]])}, {}),
        ("soft_cldice_loss", {"input": _HARD, "target": _HARD}, {}),
        ("soft_dice_cldice_loss", {"input": _SATURATED, "target": _HARD}, {"activation": "softmax"}),
        ("jukebox_loss", {"input": torch.zeros(1, 2, 3, 3), "target": torch.ones(1, 2, 3, 3)}, {}),
        ("local_normalized_cross_correlation_loss", {"input": torch.ones(1, 1, 4, 4), "target": torch.ones(1, 1, 4, 4)},
         {}),
        ("global_mutual_information_loss", {"input": _HARD, "target": _HARD}, {}),
    ],
)
def test_new_losses_have_finite_gradients_on_saturated_or_perfect_inputs(
        name: str, inputs: dict[str, torch.Tensor], params: dict[str, Any]) -> None:
    """Perfect predictions, saturated logits, zero FFT amplitudes, flat windows: no NaN gradient."""
    r = evaluate(REGISTRY, name, inputs, params)
    assert torch.isfinite(r.loss).all() and all(torch.isfinite(g).all() for g in r.grads.values()), (r.loss, r.grads)


@pytest.mark.parametrize(("name", "means"), [("FocalLoss", ("sigmoid_focal_loss", "softmax_focal_loss")),
                                             ("focal_loss", ("sigmoid_focal_loss", "softmax_focal_loss")),
                                             ("focal", ("sigmoid_focal_loss", "softmax_focal_loss", "binary_focal_loss")),
                                             ("CrossEntropyFocalLoss", ("sigmoid_focal_loss", "softmax_focal_loss")),
                                             ("SSIMLoss", ("ssim_loss", "'one_minus'", "'valid'")),
                                             ("HausdorffDTLoss", ("hausdorff_dt_loss", "include_background false")),
                                             ("BinaryFocalLossWithLogits", ("sigmoid_focal_loss", "'split'", "-100")),
                                             ("multiclass_focal_loss", ("softmax_focal_loss", "mode 'multiclass'")),
                                             ("LovaszSoftmaxLoss", ("lovasz_softmax_loss", "per_image true")),
                                             ("lovasz_softmax", ("lovasz_softmax_loss", "from_logits false")),
                                             ("MS_SSIMLoss", ("ms_ssim_loss", "ms_ssim_l1_loss")),
                                             ("iou_loss", ("jaccard_loss", "generalized_box_iou_loss")),
                                             ("IoULoss", ("jaccard_loss", "complete_box_iou_loss")),
                                             ("hausdorff_loss", ("hausdorff_dt_loss", "hausdorff_er_loss")),
                                             ("BinaryFocalLoss", ("sigmoid_focal_loss", "binary_focal_loss"))])
def test_split_names_are_not_found_and_name_each_meaning(name: str, means: tuple[str, ...]) -> None:
    with pytest.raises(LossError) as err:
        REGISTRY.get(name)
    assert err.value.code == "NOT_FOUND" and all(m in err.value.message for m in means), err.value.message


@pytest.mark.parametrize(("alias", "canonical"), [
    ("nt_xent", "nt_xent_loss"), ("NTXentLoss", "nt_xent_loss"), ("focal_tversky_loss", "focal_tversky_loss"),
    ("SigmoidFocalLoss", "sigmoid_focal_loss"), ("InfoNCE", "info_nce_loss"), ("GIoULoss", "generalized_box_iou_loss"),
    ("PSNRLoss", "psnr_loss"), ("TotalVariation", "total_variation_loss"), ("total_variation", "total_variation_loss"),
    ("MILossFromRef", "mutual_information_loss"), ("NMILossFromRef", "normalized_mutual_information_loss"),
    ("BiTemperedLogisticLoss", "bi_tempered_logistic_loss"), ("BoundaryLoss", "boundary_loss"),
    ("BalancedBCEWithLogitsLoss", "balanced_binary_cross_entropy_with_logits"),
])
def test_aliases_mean_what_the_field_means(alias: str, canonical: str) -> None:
    assert REGISTRY.get(alias).name == canonical


@pytest.mark.parametrize("name", ["ssim", "ms_ssim", "mutual_information", "TVLoss", "pseudo_huber_loss"])
def test_metric_names_are_no_loss_aliases(name: str) -> None:
    """The field's ``ssim``/``ms_ssim`` return the similarity itself, not a loss; ``TVLoss`` means several formulas;
    pseudo-Huber with δ is δ²(√(1 + (x/δ)²) - 1), which charbonnier_loss's scale is not."""
    with pytest.raises(LossError) as err:
        REGISTRY.get(name)
    assert err.value.code == "NOT_FOUND"


def test_focal_tversky_defaults_are_not_dice() -> None:
    tensors, _ = REGISTRY.get("dice_loss").example_inputs()
    dice = evaluate(REGISTRY, "dice_loss", tensors, {})
    focal = evaluate(REGISTRY, "focal_tversky_loss", tensors, {})
    same = evaluate(REGISTRY, "tversky_loss", tensors, {"alpha": 0.3, "beta": 0.7, "gamma": 0.75})
    assert not torch.allclose(dice.loss, focal.loss) and torch.equal(focal.loss, same.loss)


def test_nt_xent_is_symmetric_over_both_views() -> None:
    a, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    ab = evaluate(REGISTRY, "nt_xent_loss", {"input": a, "target": b}, {})
    ba = evaluate(REGISTRY, "nt_xent_loss", {"input": b, "target": a}, {})
    torch.testing.assert_close(ab.loss, ba.loss)


def test_overlap_defaults_keep_the_previous_numbers() -> None:
    """Before the convention parameters: pooled over the batch, Σ p·t, empty classes scored."""
    tensors, _ = REGISTRY.get("dice_loss").example_inputs()
    p, t = torch.sigmoid(tensors["input"]).reshape(2, 1, -1), tensors["target"].reshape(2, 1, -1)
    inter, total = (p * t).sum((0, 2)), (p + t).sum((0, 2))
    expected = (1 - 2 * inter / total.clamp_min(1e-7)).mean()
    torch.testing.assert_close(evaluate(REGISTRY, "dice_loss", tensors, {}).loss, expected)


def test_ms_ssim_with_anticorrelated_images_has_finite_gradients() -> None:
    """relu clips a negative contrast-structure mean to 0, where x**w (w < 1) has an infinite derivative."""
    x = torch.linspace(0, 1, 36, dtype=torch.float64).reshape(1, 1, 6, 6)
    r = evaluate(REGISTRY, "ms_ssim_loss", {"input": x, "target": 1 - x}, {"window_size": 3, "weights": [0.4, 0.6]})
    assert r.loss.item() == 1.0 and torch.isfinite(r.grads["input"]).all()


@pytest.mark.parametrize("params", [{"eps": 0.0, "smooth_dr": 1e-5}, {}])
def test_mcc_on_a_perfect_prediction_is_zero_with_finite_gradients(params: dict[str, Any]) -> None:
    """MONAI's convention (FP = FN = 0: loss 0) once eps is 0; with smp's eps the counts are never 0."""
    target = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]], dtype=torch.float64)
    r = evaluate(REGISTRY, "mcc_loss", {"input": target.clone(), "target": target},
                 {"mode": "multilabel", "aggregation": "per_sample", "reduction": "none"} | params)
    assert torch.isfinite(r.grads["input"]).all()
    if params:
        assert r.loss.tolist() == [[0.0], [0.0]]


@pytest.mark.parametrize(("t1", "t2"), [(0.5, 0.5), (1.0, 0.7), (0.8, 1.5), (0.0, 0.9)])
def test_bi_tempered_with_saturated_logits_has_finite_gradients(t1: float, t2: float) -> None:
    """t2 < 1 has finite support: other classes get p = 0 exactly, where log_t(p) has an infinite derivative."""
    x = torch.tensor([[30.0, -30.0, -30.0], [0.2, 0.1, -0.3]], dtype=torch.float64)
    r = evaluate(REGISTRY, "bi_tempered_logistic_loss", {"input": x, "target": torch.tensor([0, 2])},
                 {"t1": t1, "t2": t2, "num_iters": 30})
    assert torch.isfinite(r.loss) and torch.isfinite(r.grads["input"]).all()


def test_bi_tempered_with_both_temperatures_1_is_cross_entropy() -> None:
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 3, 1, 1, 2])
    r = evaluate(REGISTRY, "bi_tempered_logistic_loss", {"input": x, "target": y}, {})
    torch.testing.assert_close(r.loss, F.cross_entropy(x, y))


def test_bi_tempered_gradient_is_the_converged_one() -> None:
    """The escort gradient is exact at convergence: after enough steps it equals finite differences of the value."""
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 3, 1])
    params = {"t1": 0.7, "t2": 1.6, "num_iters": 100}
    r = evaluate(REGISTRY, "bi_tempered_logistic_loss", {"input": x, "target": y}, params)
    step = torch.zeros_like(x)
    step[1, 2] = 1e-6
    up = evaluate(REGISTRY, "bi_tempered_logistic_loss", {"input": x + step, "target": y}, params).loss
    down = evaluate(REGISTRY, "bi_tempered_logistic_loss", {"input": x - step, "target": y}, params).loss
    assert abs(float((up - down) / 2e-6) - float(r.grads["input"][1, 2])) < 1e-7


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_bi_tempered_with_both_temperatures_1_is_cross_entropy_bit_for_bit(reduction: str, dtype: torch.dtype) -> None:
    """The documented equivalence holds exactly: torch's own log_softmax path, as cross_entropy's (it was
    Σ y·log(y + 1e-10) - y·log p - y + p: 1e-10 and a rounding of Σ p - 1 off)."""
    x = (torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3).to(dtype)
    x[0, :, 0] = torch.tensor([-50.0, 50.0, 50.0, 0.0])  # the true class's probability underflows in float32
    y = torch.randint(0, 4, (6, 3), generator=torch.Generator().manual_seed(1))
    y[0, 0] = 0
    r = evaluate(REGISTRY, "bi_tempered_logistic_loss", {"input": x, "target": y}, {"reduction": reduction})
    xl = x.clone().requires_grad_()
    expected = F.cross_entropy(xl, y, reduction=reduction)
    (g,) = torch.autograd.grad(expected, xl, torch.ones_like(expected))
    assert torch.equal(r.loss, expected.detach()) and torch.equal(r.grads["input"], g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("t1", "t2"), [(1.0, 1.0), (0.8, 1.0), (0.5, 1.0), (1.0, 1.01), (0.8, 1.01), (0.7, 1.5)])
def test_bi_tempered_with_an_underflowing_true_class_is_finite(dtype: torch.dtype, t1: float, t2: float) -> None:
    """The true class's probability underflows to 0 (float32 logits [-50, 50, 50]: p = 1.9e-44, [-500, 500, 500]
    with t2 = 1.01: p = 1001^-100): log_t1(p) of 0 gave an infinite loss (t1 = 1) or NaN gradients (t1 < 1).
    Computed from log p, loss and gradients are finite and those of float64 logits, where p does not underflow."""
    big = 500.0 if t2 != 1 else 50.0
    x = torch.tensor([[-big, big, big], [0.3, -0.2, 1.1]])
    y, params = torch.tensor([0, 2]), {"t1": t1, "t2": t2, "num_iters": 50, "reduction": "none"}
    r = evaluate(REGISTRY, "bi_tempered_logistic_loss", {"input": x.to(dtype), "target": y}, params)
    exact = evaluate(REGISTRY, "bi_tempered_logistic_loss", {"input": x.double(), "target": y}, params)
    assert torch.isfinite(r.loss).all() and torch.isfinite(r.grads["input"]).all()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(r.loss.double(), exact.loss, rtol=tol, atol=tol)
    torch.testing.assert_close(r.grads["input"].double(), exact.grads["input"], rtol=tol, atol=tol)
    if t1 == 1.0 and t2 == 1.0:  # the documented cross_entropy: 100.69, gradients [-1, 1/2, 1/2]
        assert r.grads["input"][0].tolist() == [-1.0, 0.5, 0.5]


def test_bi_tempered_outside_the_finite_support_is_still_infinite_for_t1_1() -> None:
    """t2 < 1 gives a true class far below the others p = 0 exactly; -log 0 is an infinite loss, as it should be."""
    x, y = torch.tensor([[-100.0, 100.0, 100.0]]), torch.tensor([0])
    r = evaluate(REGISTRY, "bi_tempered_logistic_loss", {"input": x, "target": y}, {"t1": 1.0, "t2": 0.7})
    assert r.loss.item() == float("inf")
    bounded = evaluate(REGISTRY, "bi_tempered_logistic_loss", {"input": x, "target": y}, {"t1": 0.8, "t2": 0.7})
    assert torch.isfinite(bounded.loss) and torch.isfinite(bounded.grads["input"]).all()


def test_heatmap_divergences_with_empty_pixels_have_finite_gradients() -> None:
    """0·log 0 = 0: target pixels of 0 (and, for JS, pixels 0 in both maps) add nothing and no NaN."""
    p = torch.tensor([[[[0.5, 0.5], [0.0, 0.0]]]], dtype=torch.float64)
    t = torch.tensor([[[[0.25, 0.25], [0.5, 0.0]]]], dtype=torch.float64)
    for name in ("kl_div_loss_2d", "js_div_loss_2d"):
        r = evaluate(REGISTRY, name, {"input": t, "target": p}, {})
        assert torch.isfinite(r.loss) and torch.isfinite(r.grads["input"]).all() and torch.isfinite(r.grads["target"]).all()
    assert evaluate(REGISTRY, "js_div_loss_2d", {"input": p, "target": p.clone()}, {}).loss.item() == 0.0


def test_psnr_of_identical_images_is_minus_infinity_with_zero_gradient() -> None:
    x = torch.rand(2, 3, dtype=torch.float64)
    r = evaluate(REGISTRY, "psnr_loss", {"input": x, "target": x.clone()}, {})
    assert r.loss.item() == -float("inf") and torch.equal(r.grads["input"], torch.zeros_like(x))


def test_mutual_information_of_a_constant_signal_is_zero_with_finite_gradients() -> None:
    x, y = torch.full((2, 10), 0.5, dtype=torch.float64), torch.rand(2, 10, dtype=torch.float64)
    r = evaluate(REGISTRY, "mutual_information_loss", {"input": x, "target": y}, {"num_bins": 8})
    torch.testing.assert_close(r.loss, torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.isfinite(r.grads["input"]).all() and torch.isfinite(r.grads["target"]).all()


def test_boundary_loss_is_negative_on_a_perfect_prediction_and_its_map_is_kervadecs() -> None:
    from lossd.server.losses._boundary import signed_distance_map

    mask = torch.zeros(1, 5, 5, dtype=torch.bool)
    mask[0, 1:4, 1:4] = True
    field = signed_distance_map(mask)[0]
    assert field[2, 2].item() == -1.0 and field[1, 1].item() == 0.0 and field[0, 0].item() == pytest.approx(2 ** 0.5)
    assert field[4, 2].item() == 1.0
    target = mask.unsqueeze(1).double()
    r = evaluate(REGISTRY, "boundary_loss", {"input": target.clone(), "target": target}, {})
    assert r.loss.item() == -1.0 / 25 and torch.isfinite(r.grads["input"]).all()


def test_distance_field_is_exact_euclidean() -> None:
    from lossd.server.losses._image import distance_field

    mask = torch.zeros(1, 5, 6, dtype=torch.bool)
    mask[0, 1, 1] = True
    field = distance_field(mask)[0]
    assert field[4, 5].item() == pytest.approx((3 ** 2 + 4 ** 2) ** 0.5) and field[1, 1].item() == 1.0


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigmoid_focal_with_gamma0_no_alpha_is_exactly_bce_with_logits(reduction: str, dtype: torch.dtype) -> None:
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(0), dtype=dtype)
    t = (torch.rand(7, 3, generator=torch.Generator().manual_seed(1)) > 0.5).to(dtype)
    r = evaluate(REGISTRY, "sigmoid_focal_loss", {"input": x, "target": t},
                 {"gamma": 0.0, "alpha": -1.0, "reduction": reduction})
    xl = x.clone().requires_grad_()
    expected = F.binary_cross_entropy_with_logits(xl, t, reduction=reduction)
    (g,) = torch.autograd.grad(expected, xl, torch.ones_like(expected))
    assert torch.equal(r.loss, expected.detach()) and torch.equal(r.grads["input"], g)


def test_binary_focal_is_the_seed_formula() -> None:
    y_pred = torch.tensor([0.9, 0.2, 0.6, 0.05])
    y_true = torch.tensor([1.0, 0.0, 1.0, 1.0])
    bce = F.binary_cross_entropy(y_pred, y_true, reduction="none")
    p_t = y_true * y_pred + (1 - y_true) * (1 - y_pred)
    alpha_factor = y_true * 0.75 + (1 - y_true) * 0.25
    expected = torch.mean(alpha_factor * torch.pow(1.0 - p_t, 2.0) * bce)
    r = evaluate(REGISTRY, "binary_focal_loss", {"y_pred": y_pred, "y_true": y_true}, {})
    torch.testing.assert_close(r.loss, expected)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bits as integers: equal NaNs compare equal, -0.0 and 0.0 do not."""
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _seed_focal(p: torch.Tensor, t: torch.Tensor, target_grad: bool) -> tuple[torch.Tensor, ...]:
    """The seed's formula with torch's own binary_cross_entropy: value, input gradient (and target gradient)."""
    p, t = p.clone().requires_grad_(), t.clone().requires_grad_(target_grad)
    bce = F.binary_cross_entropy(p, t, reduction="none")
    p_t = t * p + (1 - t) * (1 - p)
    alpha = t * 0.75 + (1 - t) * 0.25
    loss = alpha * modulating_factor(1 - p_t, 2.0) * bce
    leaves = (p, t) if target_grad else (p,)
    return (loss.detach(), *torch.autograd.grad(loss.sum(), leaves))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binary_focal_target_gradient_on_a_perfect_prediction_is_zero(dtype: torch.dtype) -> None:
    """torch's binary_cross_entropy gives the target -logit(p): ±inf at p = 0 or 1, times the focal factor 0 is
    NaN. The derivative of the (clamped) value is finite, and the limit of a near-perfect prediction is 0."""
    y = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=dtype)
    r = evaluate(REGISTRY, "binary_focal_loss", {"y_pred": y, "y_true": y.clone()}, {})
    assert r.loss.item() == 0.0
    assert r.grads["y_pred"].tolist() == [0.0] * 4 and r.grads["y_true"].tolist() == [0.0] * 4
    near = evaluate(REGISTRY, "binary_focal_loss", {"y_pred": (y - 1e-6).abs(), "y_true": y}, {})
    assert float(near.grads["y_true"].abs().max()) < 1e-9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_binary_focal_is_torch_bce_bit_for_bit_with_a_finite_target_gradient(dtype: torch.dtype) -> None:
    """Value and input gradient are torch's binary_cross_entropy's, bit for bit, probabilities of exactly 0 and
    1 included (float16's input gradient NaN there too: torch's clamp of p(1 - p) at 1e-12 is 0 in float16);
    the target's gradient is torch's where that is finite and the clamped value's derivative (log p
    and log(1 - p) clamped at -100) where torch's is ±inf or NaN."""
    g = torch.Generator().manual_seed(3)
    p = torch.rand(400, generator=g, dtype=torch.float64)
    t = torch.rand(400, generator=g, dtype=torch.float64)
    k = torch.randint(0, 4, (400,), generator=g)
    p = torch.where(k == 0, 0.0, torch.where(k == 1, 1.0, p)).to(dtype)
    t = torch.where(k == 2, p.double(), torch.where(torch.rand(400, generator=g) < 0.5, t.round(), t)).to(dtype)
    r = evaluate(REGISTRY, "binary_focal_loss", {"input": p, "target": t}, {"reduction": "none"})
    value, grad_p = _seed_focal(p, t, target_grad=False)
    assert torch.equal(_bits(r.loss), _bits(value)) and torch.equal(_bits(r.grads["input"]), _bits(grad_p))
    _, _, torch_grad_t = _seed_focal(p, t, target_grad=True)
    finite = torch.isfinite(torch_grad_t)
    assert torch.equal(_bits(r.grads["target"][finite]), _bits(torch_grad_t[finite]))
    assert torch.isfinite(r.grads["target"]).all() and not finite.all()
    slope = (torch.log1p(-p).clamp_min(-100) - p.log().clamp_min(-100)).double()
    alpha = t.double() * 0.75 + (1 - t.double()) * 0.25
    q = (1 - (t.double() * p.double() + (1 - t.double()) * (1 - p.double()))).clamp_min(0)
    # where torch's is not finite, p is 0 or 1: the focal path's d/dt is alpha_t'·q²·bce + alpha_t·2q·(1 - 2p)·bce
    bce = F.binary_cross_entropy(p, t, reduction="none").double()
    expected = alpha * q ** 2 * slope + 0.5 * q ** 2 * bce + alpha * 2 * q * (1 - 2 * p.double()) * bce
    torch.testing.assert_close(r.grads["target"][~finite].double(), expected[~finite], rtol=2e-2, atol=1e-2)


_TOUCHING = {  # boxes1, boxes2: an overlap with a side exactly 0, or a predicted box of zero width
    "touching-x": ([0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0]),
    "touching-x-taller": ([0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 2.0, 2.0]),
    "touching-corner": ([0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0]),
    "zero-width-inside": ([1.0, 1.0, 1.0, 2.0], [0.0, 0.0, 2.0, 3.0]),
}


@pytest.mark.parametrize("loss", ["distance_box_iou_loss", "complete_box_iou_loss"])
@pytest.mark.parametrize("case", list(_TOUCHING))
def test_diou_and_ciou_gradients_at_a_zero_overlap_side_are_torchvision_s(loss: str, case: str) -> None:
    """torchvision's _loss_inter_union counts the intersection only where both sides are > 0: no gradient at
    touching boxes. The clamp at 0 let the other side through (diou [0, 0, 1, 1] vs [1, 0, 2, 1]: d/dx2 -0.70
    for torchvision's -0.20)."""
    b1, b2 = (torch.tensor([b], dtype=torch.float64) for b in _TOUCHING[case])
    if loss == "complete_box_iou_loss" and case.startswith("zero-width"):
        return  # refused: its aspect ratio is undefined
    r = evaluate(REGISTRY, loss, {"boxes1": b1, "boxes2": b2}, {})
    leaves = {"boxes1": b1.clone().requires_grad_(), "boxes2": b2.clone().requires_grad_()}
    expected = boxes.REFERENCES[loss].functional(leaves, {})
    g1, g2 = torch.autograd.grad(expected, (leaves["boxes1"], leaves["boxes2"]))
    assert r.loss.item() == expected.item()
    torch.testing.assert_close(r.grads["boxes1"], g1, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(r.grads["boxes2"], g2, rtol=1e-12, atol=1e-15)
    if case == "touching-x":
        assert abs(r.grads["boxes1"][0, 2].item() - -0.2) < 1e-6


def test_giou_gradient_at_touching_boxes_is_monai_s() -> None:
    """generalized_box_iou_loss keeps MONAI's BoxGIoULoss's subgradient (the overlap's sides clamped at 0), which
    differs there from torchvision's (-1/3 for d/dx2, torchvision -1/4); its notes say so. The numbers are MONAI
    1.x's (tests/support/refs/libraries.py checks the library where it installs)."""
    b1, b2 = torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[1.0, 0.0, 2.0, 2.0]])
    r = evaluate(REGISTRY, "generalized_box_iou_loss", {"boxes1": b1, "boxes2": b2}, {"eps": 1.1920928955078125e-07})
    assert r.loss.item() == 1.25
    torch.testing.assert_close(r.grads["boxes1"], torch.tensor([[-0.125, 0.0625, -1 / 3, -0.25]]))
    assert "MONAI" in REGISTRY.get("generalized_box_iou_loss").notes
    monai = pytest.importorskip("monai.losses")
    x = b1.clone().requires_grad_()
    (g,) = torch.autograd.grad(monai.BoxGIoULoss()(x, b2), x)
    torch.testing.assert_close(r.grads["boxes1"], g)


def test_tversky_with_half_weights_is_dice() -> None:
    tensors, _ = REGISTRY.get("dice_loss").example_inputs()
    dice = evaluate(REGISTRY, "dice_loss", tensors, {})
    tversky = evaluate(REGISTRY, "tversky_loss", tensors, {"alpha": 0.5, "beta": 0.5})
    torch.testing.assert_close(dice.loss, tversky.loss)


@pytest.mark.parametrize(
    ("name", "inputs", "params", "field", "rule"),
    [
        ("binary_focal_loss", {"input": torch.tensor([1.5]), "target": torch.tensor([1.0])}, {}, "inputs.input", "[0, 1]"),
        ("binary_focal_loss", {"input": torch.tensor([0.5]), "target": torch.tensor([2.0])}, {}, "inputs.target", "[0, 1]"),
        ("sigmoid_focal_loss", {"input": torch.zeros(2), "target": torch.zeros(3)}, {}, "inputs.target", "same shape"),
        ("sigmoid_focal_loss", {"input": torch.zeros(2), "target": torch.zeros(2)}, {"gamma": -1.0}, "params.gamma", ">= 0"),
        ("softmax_focal_loss", {"input": torch.zeros(2, 3), "target": torch.tensor([0, 3])}, {}, "inputs.target", "[0, 3)"),
        ("softmax_focal_loss", {"input": torch.zeros(2, 3), "target": torch.tensor([0, 1]), "alpha": torch.ones(2)}, {},
         "inputs.alpha", "[3]"),
        ("dice_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2)}, {"mode": "multiclass"},
         "inputs.target", "same shape"),
        ("dice_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2, dtype=torch.long)},
         {"mode": "multiclass", "class_weights": [1.0, 2.0]}, "params.class_weights", "one weight per class"),
        ("dice_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2, dtype=torch.long)},
         {"mode": "multiclass", "classes": [3]}, "params.classes", "[0, 3)"),
        ("dice_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2, 3)}, {"include_background": False},
         "params.include_background", "multiclass"),
        ("tversky_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2, 3)}, {"gamma_on": "mean", "reduction": "sum"},
         "params.gamma_on", "reduction 'mean'"),
        ("sigmoid_focal_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2, 3)}, {"pos_weight": [1.0, 2.0]},
         "params.pos_weight", "one value per class"),
        ("complete_box_iou_loss", {"boxes1": torch.tensor([[0.0, 0.0, 1.0, 0.0]]), "boxes2": torch.tensor([[0.0, 0.0, 1.0, 1.0]])},
         {}, "inputs.boxes1", "y1 < y2"),
        ("sigmoid_focal_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2, 3)}, {"class_alpha": [1.0, 2.0, 3.0]},
         "params.class_alpha", "alpha -1"),
        ("sigmoid_focal_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2, 3)},
         {"class_alpha": [1.0, 2.0], "alpha": -1.0}, "params.class_alpha", "one value per class"),
        ("sigmoid_focal_loss", {"input": torch.zeros(2, 3, 4), "target": torch.zeros(2, 3, 4)}, {"average_space": True},
         "params.average_space", "reduction 'sum'"),
        ("sigmoid_focal_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2, 3)},
         {"average_space": True, "reduction": "sum"}, "params.average_space", "spatial dim"),
        ("dice_loss", {"input": torch.zeros(2, 3, 4), "target": torch.zeros(2, 4, dtype=torch.long)},
         {"mode": "multiclass", "mask_target": "class_indices"}, "params.mask_target", "needs inputs.mask"),
        ("dice_loss", {"input": torch.zeros(2, 3, 4), "target": torch.zeros(2, 4, dtype=torch.long),
                       "mask": torch.full((2, 1, 4), 0.5)},
         {"mode": "multiclass", "mask_target": "class_indices"}, "inputs.mask", "0 or 1"),
        ("jaccard_loss", {"input": torch.zeros(2, 3, 4), "target": torch.zeros(2, 3, 4), "mask": torch.ones(2, 1, 4)},
         {"mode": "multiclass", "mask_target": "class_indices"}, "params.mask_target", "class-index target"),
        ("generalized_wasserstein_dice_loss", {"input": torch.zeros(2, 3, 4), "target": torch.zeros(2, 4, dtype=torch.long),
                                               "dist_matrix": torch.ones(2, 2)}, {}, "inputs.dist_matrix", "[3, 3]"),
        ("generalized_wasserstein_dice_loss", {"input": torch.zeros(2, 3, 4), "target": torch.zeros(2, 4, dtype=torch.long),
                                               "dist_matrix": -torch.ones(3, 3)}, {}, "inputs.dist_matrix", ">= 0"),
        ("generalized_wasserstein_dice_loss", {"input": torch.zeros(2, 3, 4), "target": torch.zeros(2, 4, dtype=torch.long),
                                               "dist_matrix": torch.zeros(3, 3)}, {}, "inputs.dist_matrix", "entry > 0"),
        ("generalized_wasserstein_dice_loss", {"input": torch.zeros(2, 3, 4), "target": torch.full((2, 4), 3),
                                               "dist_matrix": torch.ones(3, 3)}, {}, "inputs.target", "[0, 3)"),
        ("soft_cldice_loss", {"input": torch.zeros(2, 1, 4), "target": torch.zeros(2, 1, 4)}, {}, "inputs.input",
         "(N, C, H, W) or (N, C, D, H, W)"),
        ("soft_cldice_loss", {"input": torch.full((1, 1, 3, 3), 2.0), "target": torch.zeros(1, 1, 3, 3)}, {},
         "inputs.input", "[0, 1]"),
        ("soft_cldice_loss", {"input": torch.zeros(1, 1, 3, 3), "target": torch.zeros(1, 1, 3, 3)},
         {"activation": "softmax"}, "params.activation", "C > 1"),
        ("soft_dice_cldice_loss", {"input": torch.zeros(1, 2, 3, 3), "target": torch.zeros(1, 3, 3, dtype=torch.long)},
         {"iter_": 101}, "params.iter_", "[0, 100]"),
        ("soft_dice_cldice_loss", {"input": torch.zeros(1, 2, 3, 3), "target": torch.zeros(1, 3, 3)}, {},
         "inputs.target", "same shape as input"),
        ("asymmetric_focal_loss", {"input": torch.full((2, 3, 4), 0.5), "target": torch.zeros(2, 3, 4)}, {},
         "inputs.input", "binary segmentation"),
        ("asymmetric_focal_tversky_loss", {"input": torch.full((2, 2, 4), 0.5), "target": torch.full((2, 4), 2)}, {},
         "inputs.target", "[0, 2)"),
        ("asymmetric_unified_focal_loss", {"input": torch.full((2, 1, 4), 0.5), "target": torch.zeros(2, 1, 4)},
         {"gamma": 1.5}, "params.gamma", "[0, 1]"),
        ("asymmetric_unified_focal_loss", {"input": torch.full((2, 1, 4), 1.5), "target": torch.zeros(2, 1, 4)}, {},
         "inputs.input", "[0, 1]"),
        ("nacl_loss", {"input": torch.zeros(2, 3, 4), "target": torch.zeros(2, 4, dtype=torch.long)}, {},
         "inputs.input", "(N, C, H, W)"),
        ("nacl_loss", {"input": torch.zeros(2, 3, 4, 4), "target": torch.zeros(2, 4, dtype=torch.long)}, {},
         "inputs.target", "[2, 4, 4]"),
        ("aucm_loss", {"input": torch.zeros(4, 1), "target": torch.full((4, 1), 0.5)}, {}, "inputs.target", "0 or 1"),
        ("asymmetric_focal_loss", {"input": torch.full((2, 2, 4), 0.5), "target": torch.zeros(2, 2, 4)},
         {"epsilon": 0.0}, "params.epsilon", "(0, 0.5)"),
        ("aucm_loss", {"input": torch.zeros(4, 1), "target": torch.zeros(4, 1), "a": torch.zeros(2)}, {}, "inputs.a",
         "one number"),
        ("aucm_loss", {"input": torch.zeros(0, 1), "target": torch.zeros(0, 1)}, {}, "inputs.input", "at least one"),
        ("jukebox_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2, 3)}, {}, "inputs.input",
         "1 to 3 spatial dims"),
        ("jukebox_loss", {"input": torch.zeros(2, 3, 4), "target": torch.zeros(2, 3, 4)}, {"fft_signal_size": [3]},
         "params.fft_signal_size", "one positive size per channel and spatial dim"),
        ("bending_energy_loss", {"input": torch.zeros(2, 1, 5, 5)}, {}, "inputs.input", "one per spatial dim: 2"),
        ("diffusion_loss", {"input": torch.zeros(2, 2, 2, 5)}, {}, "inputs.input", "must all be > 2"),
        ("lncc_loss", {"input": torch.zeros(2, 1, 5), "target": torch.zeros(2, 1, 5)}, {"kernel_size": 4},
         "params.kernel_size", "odd"),
        ("lncc_loss", {"input": torch.zeros(2, 1, 5), "target": torch.zeros(2, 1, 5)}, {"smooth_dr": 0.0},
         "params.smooth_dr", "> 0"),
        ("gmi_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2, 3)}, {"kernel_type": "b-spline"},
         "inputs.input", "max > min"),
        ("gmi_loss", {"input": torch.zeros(64, 1, 128, 128), "target": torch.zeros(64, 1, 128, 128)}, {"num_bins": 256},
         "inputs.input", "at most"),
        ("patch_adversarial_loss", {"input": torch.zeros(2, 3)}, {"target_is_real": False, "for_discriminator": False},
         "params.target_is_real", "generator"),
        ("distance_box_iou_loss", {"boxes1": torch.zeros(2, 6), "boxes2": torch.zeros(2, 6)}, {}, "inputs.boxes1",
         "(N, 4) or (4)"),
        ("generalized_box_iou_loss", {"boxes1": torch.tensor([[0.0, 0, 2, 1, 1, 1]]), "boxes2": torch.ones(1, 6)}, {},
         "inputs.boxes1", "z1 <= z2"),
        ("hausdorff_dt_loss", {"input": torch.zeros(64, 1, 128, 128), "target": torch.zeros(64, 1, 128, 128)}, {},
         "inputs.input", "at most"),
        ("ms_ssim_loss", {"input": torch.zeros(1, 1, 20, 20), "target": torch.zeros(1, 1, 20, 20)}, {},
         "inputs.input", "at least 176"),
        ("nt_xent_loss", {"input": torch.zeros(3, 4), "target": torch.zeros(2, 4)}, {}, "inputs.target", "must equal"),
        ("dice_loss", {"input": torch.zeros(2, 3, 4), "target": torch.zeros(2, 4, dtype=torch.long) + 5},
         {"mode": "multiclass"}, "inputs.target", "[0, 3)"),
        ("quantile_loss", {"input": torch.zeros(4, 2), "target": torch.zeros(4)}, {"quantiles": [0.1, 0.5, 0.9]},
         "inputs.input", "[4, 3]"),
        ("quantile_loss", {"input": torch.zeros(4), "target": torch.zeros(4)}, {"quantiles": [1.5]},
         "params.quantiles[0]", "(0, 1)"),
        ("info_nce_loss", {"query": torch.ones(3, 4), "positive_key": torch.ones(3, 4), "negative_keys": torch.ones(5, 3)},
         {}, "inputs.negative_keys", "(M, 4)"),
        ("mcc_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2, 3)}, {"eps": 0.0},
         "params.smooth_dr", "eps or smooth_dr must be > 0"),
        ("info_nce_loss", {"query": torch.ones(3, 4), "positive_key": torch.ones(3, 4)}, {"temperature": 0.0},
         "params.temperature", "> 0"),
        ("sigmoid_focal_loss", {"input": torch.zeros(2, 3, 4), "target": torch.zeros(2, 4)}, {"mode": "multiclass"},
         "inputs.target", "class indices (an integer dtype)"),
        ("sigmoid_focal_loss", {"input": torch.zeros(2, 3, 4), "target": torch.zeros(2, 5, dtype=torch.long)},
         {"mode": "multiclass"}, "inputs.target", "must be [2, 4]"),
        ("sigmoid_focal_loss", {"input": torch.zeros(2, 3, 4), "target": torch.full((2, 4), 3)},
         {"mode": "multiclass", "ignore_index": -1}, "inputs.target", "[0, 3) or equal ignore_index (-1)"),
        ("sigmoid_focal_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2, 3)},
         {"activation": "softmax", "focal_form": "exp_bce"}, "params.activation", "focal_form 'linear'"),
        ("psnr_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(3, 2)}, {}, "inputs.target", "same shape"),
        ("psnr_loss", {"input": torch.zeros(2), "target": torch.ones(2)}, {"max_val": 0.0}, "params.max_val", "> 0"),
        ("total_variation_loss", {"input": torch.zeros(4)}, {}, "inputs.input", "(*, H, W)"),
        ("mutual_information_loss", {"input": torch.zeros(4), "target": torch.zeros(4)}, {"signal_dims": 2},
         "inputs.input", "at least signal_dims (2)"),
        ("mutual_information_loss", {"input": torch.zeros(4, 5), "target": torch.zeros(4, 6)}, {},
         "inputs.target", "same shape"),
        ("mutual_information_loss", {"input": torch.zeros(65, 4096), "target": torch.zeros(65, 4096)}, {},
         "inputs.input", "at most 16777216"),
        ("normalized_mutual_information_loss", {"input": torch.zeros(4), "target": torch.zeros(4)}, {"num_bins": 1},
         "params.num_bins", "[2, 1024]"),
        ("kl_div_loss_2d", {"input": torch.full((1, 1, 2, 2), 0.25), "target": torch.full((1, 1, 2, 2), -0.25)}, {},
         "inputs.target", ">= 0"),
        ("js_div_loss_2d", {"input": torch.zeros(2, 4), "target": torch.zeros(2, 4)}, {}, "inputs.input",
         "(N, C, H, W)"),
        ("inverse_depth_smoothness_loss", {"input": torch.zeros(1, 1, 3, 4), "target": torch.zeros(1, 3, 4, 3)}, {},
         "inputs.target", "(H, W)"),
        ("inverse_depth_smoothness_loss", {"input": torch.zeros(1, 1, 1, 4), "target": torch.zeros(1, 3, 1, 4)}, {},
         "inputs.input", "at least 2"),
        ("bi_tempered_logistic_loss", {"input": torch.zeros(2, 3), "target": torch.tensor([0, 3])}, {},
         "inputs.target", "[0, 3)"),
        ("bi_tempered_logistic_loss", {"input": torch.zeros(2, 1), "target": torch.tensor([0, 0])}, {},
         "inputs.input", "C >= 2"),
        ("bi_tempered_logistic_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2, 3)},
         {"ignore_index": -1}, "params.ignore_index", "class-index targets"),
        ("bi_tempered_logistic_loss", {"input": torch.zeros(2, 3), "target": torch.tensor([0, 1])}, {"t1": 1.5},
         "params.t1", "[0, 1]"),
        ("bi_tempered_logistic_loss", {"input": torch.zeros(2, 2), "target": torch.zeros(2, 2)}, {"mode": "binary"},
         "inputs.input", "(N, 1, *)"),
        ("balanced_binary_cross_entropy_with_logits", {"input": torch.zeros(2, 3), "target": torch.zeros(3)}, {},
         "inputs.target", "input's shape"),
        ("boundary_loss", {"input": torch.zeros(2, 3), "target": torch.zeros(2, 3)}, {}, "inputs.input",
         "1 to 3 spatial"),
        ("boundary_loss", {"input": torch.zeros(1, 2, 3, 3), "target": torch.zeros(1, 2, 3, 3),
                           "distance": torch.zeros(1, 2, 3)}, {}, "inputs.distance", "must equal input's"),
        ("boundary_loss", {"input": torch.zeros(1, 1, 3, 3), "target": torch.zeros(1, 1, 3, 3)},
         {"include_background": False}, "params.include_background", "more than one channel"),
        ("boundary_loss", {"input": torch.zeros(64, 1, 128, 128), "target": torch.zeros(64, 1, 128, 128)}, {},
         "inputs.input", "send distance"),
    ],
)
def test_rules_name_field(name: str, inputs: dict[str, torch.Tensor], params: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(LossError) as err:
        evaluate(REGISTRY, name, inputs, params)
    assert err.value.field == field and rule in err.value.message, str(err.value)


@pytest.mark.parametrize(("loss", "inputs", "params", "field", "says"), [
    # ms_ssim halves (floors) the image between scales: 5 -> 2 cannot hold a 3-wide window; the old minimum,
    # (window_size - 1)·2^(scales-1) + 1, let torch's "Kernel size can't be greater than actual input size" out
    ("ms_ssim_loss", {"input": torch.rand(1, 2, 5, 5), "target": torch.rand(1, 2, 5, 5)},
     {"window_size": 3, "weights": [0.5, 0.5]}, "inputs.input", "at least 6 for window_size 3 and 2 scales"),
    ("ms_ssim_loss", {"input": torch.rand(1, 1, 8, 8), "target": torch.rand(1, 1, 8, 8)},
     {"window_size": 1, "weights": [0.1] * 17}, "params.weights", "has 17 scales; at most 16"),
    # ms_ssim_l1: sigma 3e5 on 1x2x8x8 held a worker 7.6 s; larger ones asked for gigabytes
    ("ms_ssim_l1_loss", {"input": torch.rand(1, 2, 8, 8), "target": torch.rand(1, 2, 8, 8)},
     {"sigmas": [3e5]}, "params.sigmas[0]", "must be in (0, 64]"),
    ("ms_ssim_l1_loss", {"input": torch.rand(1, 2, 8, 8), "target": torch.rand(1, 2, 8, 8)},
     {"sigmas": [0.5] * 17}, "params.sigmas", "at most 16"),
    # huge finite params overflowed Python floats: "(34, 'Numerical result out of range')" under inputs
    ("ssim_loss", {"input": torch.rand(1, 1, 16, 16, dtype=torch.float64),
                   "target": torch.rand(1, 1, 16, 16, dtype=torch.float64)}, {"max_val": 1e300},
     "params.k1", "must be at most 1e+18"),
    ("psnr_loss", {"input": torch.rand(4, dtype=torch.float64), "target": torch.rand(4, dtype=torch.float64)},
     {"max_val": 1e300}, "params.max_val", "must be at most 1e18"),
    # (i + 1)^alpha past float32's largest: the loss was NaN, silently
    ("hausdorff_er_loss", {"input": torch.rand(1, 2, 8, 8), "target": torch.zeros(1, 8, 8, dtype=torch.long)},
     {"k": 100, "alpha": 20.0}, "params.alpha", "must be finite in float32"),
    # 5^100 past float32's range: the normalization overflowed and the loss was NaN, silently (float64: finite)
    ("bi_tempered_logistic_loss", {"input": torch.randn(4, 5), "target": torch.zeros(4, dtype=torch.long)},
     {"t1": 0.8, "t2": 100.0}, "params.t2", "with 5 classes in float32 must keep 5^t2 below 3.403e+38 (t2 < 55.13)"),
    ("bi_tempered_logistic_loss", {"input": torch.randn(4, 1, 3, dtype=torch.float16), "target": torch.ones(4, 1, 3)},
     {"t2": 17.0, "mode": "binary"}, "params.t2", "with 2 classes in float16 must keep 2^t2 below"),
    # a 64 x 64 mask's distances (up to 79) to the power 24 overflow float32: (p - t)^2 * inf was NaN where p = t
    ("hausdorff_dt_loss", {"input": torch.nn.functional.pad(torch.full((1, 1, 8, 8), 0.95), (0, 56, 0, 56), value=0.05),
                           "target": torch.nn.functional.pad(torch.ones(1, 1, 8, 8), (0, 56, 0, 56))},
     {"alpha": 24.0}, "params.alpha", "the sum of two distances to the power 24 (the largest distance is 79.2)"),
    # a spatial or channel size of 0: torch's "Kernel size can't be greater than actual input size" named no input
    ("hausdorff_er_loss", {"input": torch.rand(1, 2, 5, 0), "target": torch.zeros(1, 5, 0, dtype=torch.long)}, {},
     "inputs", "rejected the inputs (input has a dimension of size 0 past the batch: shape [1, 2, 5, 0])"),
    ("boundary_loss", {"input": torch.rand(1, 0, 5, 5), "target": torch.rand(1, 0, 5, 5)}, {},
     "inputs", "rejected the inputs (input has a dimension of size 0 past the batch: shape [1, 0, 5, 5])"),
    # lossd's own range check on a complex input ('ge' is not defined for complex): UNIMPLEMENTED, blaming torch
    ("dice_loss", {"input": torch.rand(2, 3, 4).to(torch.complex64), "target": torch.zeros(2, 4, dtype=torch.long)},
     {"mode": "multiclass"}, "inputs", "dice_loss does not compute with complex values"),
])
def test_a_custom_losss_bad_params_and_inputs_are_refused_naming_them(loss, inputs, params, field, says) -> None:  # type: ignore[no-untyped-def]
    """Found by an audit of lossd's own losses on bad inputs (2026-12-06)."""
    with pytest.raises(FieldError) as info:
        evaluate(REGISTRY, loss, inputs, params)
    assert (info.value.field, info.value.code) == (field, "INVALID_ARGUMENT") and says in info.value.message, info.value


@pytest.mark.parametrize(("loss", "params", "dtype", "field", "value"), [
    ("dice_loss", {"smooth": 1e39}, torch.float32, "params.smooth", "1e+39"),
    ("tversky_loss", {"alpha": 1e300}, torch.float32, "params.alpha", "1e+300"),
    ("wing_loss", {"width": 1e39}, torch.float16, "params.width", "1e+39"),  # half precision: float32's range
    ("dice_loss", {"class_weights": [0.5, -1e39]}, torch.float32, "params.class_weights[1]", "-1e+39"),
])
def test_a_float_param_beyond_the_inputs_dtype_is_refused(loss: str, params: dict[str, Any], dtype: torch.dtype,
                                                          field: str, value: str) -> None:
    """A param of a loss lossd defines that the inputs' dtype cannot hold made the loss NaN, silently (an audit,
    2026-12-06: 30 params of 25 losses, ``smooth=1e39`` on float32 the first); in float64 the loss is finite."""
    tensors, example = REGISTRY.get(loss).example_inputs(dtype)
    with pytest.raises(FieldError) as info:
        evaluate(REGISTRY, loss, tensors, {**example, **params})
    assert info.value.field == field and info.value.message.startswith(f"{value} is beyond"), info.value
    assert "send the inputs as float64 or a smaller value" in info.value.message


@pytest.mark.parametrize(("loss", "params"), [("psnr_loss", {"max_val": 65535.0}), ("dice_loss", {"smooth": 1e5}),
                                              ("ssim_loss", {"max_val": 65535.0})])
def test_half_precision_inputs_take_params_past_float16s_range(loss: str, params: dict[str, Any]) -> None:
    """The range rule first checked against float16 itself and refused psnr_loss's max_val 65535 for 16-bit images
    (the review of 2026-12-06): these losses compute half precision in float32, and the result is finite."""
    tensors, example = REGISTRY.get(loss).example_inputs(torch.float16)
    r = evaluate(REGISTRY, loss, tensors, {**example, **params})
    assert bool(r.loss.isfinite().all()), r.loss


def test_torchs_own_losses_take_any_float_param_as_torch_does() -> None:
    """The range rule is lossd's: torch's huber_loss with delta=1e39 on float32 is torch's business (parity)."""
    x = torch.rand(4)
    r = evaluate(REGISTRY, "huber_loss", {"input": x, "target": torch.zeros(4)}, {"delta": 1e39})
    assert torch.equal(r.loss, F.huber_loss(x, torch.zeros(4), delta=1e39))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize(("loss", "params"), [
    ("ssim_loss", {"window_size": 3, "sigma": 1e-30}), ("ssim_loss", {"window_size": 3, "sigma": 1e-200}),
    ("ms_ssim_l1_loss", {"sigmas": [1e-30, 1.0]}),
])
def test_a_vanishing_gaussian_sigma_is_the_centre_tap(dtype: torch.dtype, loss: str, params: dict[str, Any]) -> None:
    """2·sigma² rounding to 0 made the window's centre 0/0 and the loss NaN (an audit, 2026-12-06); the window is
    then its limit, the centre tap, as a sigma a little larger already gives (bit for bit)."""
    torch.manual_seed(0)
    x, y = torch.rand(1, 1, 32, 32, dtype=dtype), torch.rand(1, 1, 32, 32, dtype=dtype)
    smaller = evaluate(REGISTRY, loss, {"input": x, "target": y}, params)
    tiny = torch.finfo(dtype).tiny
    larger = {k: (2 * tiny ** 0.5 if isinstance(v, float) and v < 1e-19 else v) for k, v in params.items()}
    if "sigmas" in params:
        larger["sigmas"] = [2 * tiny ** 0.5, 1.0]
    reference = evaluate(REGISTRY, loss, {"input": x, "target": y}, larger)
    assert bool(smaller.loss.isfinite()) and torch.equal(smaller.loss, reference.loss), (smaller.loss, reference.loss)
    assert torch.equal(smaller.grads["input"], reference.grads["input"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("classes", [2, 5, 1000])
def test_bi_tempered_is_finite_up_to_its_t2_bound(dtype: torch.dtype, classes: int) -> None:
    """The t2 bound (C^t2 below the dtype's largest value) refuses only what would overflow: just below it, equal
    logits (the largest normalization) and random ones give a finite loss and gradients."""
    t2 = 0.999 * math.log(torch.finfo(dtype).max) / math.log(classes)
    for x in (torch.zeros(3, classes, dtype=dtype), (5 * torch.randn(3, classes)).to(dtype)):
        r = evaluate(REGISTRY, "bi_tempered_logistic_loss", {"input": x, "target": torch.zeros(3, dtype=torch.long)},
                     {"t1": 0.8, "t2": t2})
        assert bool(r.loss.isfinite()) and bool(r.grads["input"].isfinite().all()), (dtype, classes, r.loss)


@pytest.mark.parametrize(("loss", "target", "says"), [
    ("ssim_loss", torch.rand(1, 1, 16, 16, dtype=torch.float64), "input float32, target float64"),
    ("ms_ssim_l1_loss", torch.ones(1, 1, 16, 16, dtype=torch.long), "input float32, target int64"),
    ("binary_focal_loss", torch.ones(1, 1, 16, 16, dtype=torch.bool), "input float32, target bool"),
])
def test_inputs_of_different_dtypes_are_named_with_theirs(loss: str, target: torch.Tensor, says: str) -> None:
    """torch's "expected scalar type Double but found Float" came out under ``inputs`` alone (an audit of lossd's
    own losses, 2026-12-06): the refusal says which input has which dtype, and what to send."""
    with pytest.raises(FieldError) as info:
        evaluate(REGISTRY, loss, {"input": torch.rand(1, 1, 16, 16), "target": target}, {})
    assert info.value.field == "inputs" and info.value.code == "INVALID_ARGUMENT", info.value
    assert f"rejected tensor inputs of different dtypes ({says}; send them in one floating-point dtype)" in (
        info.value.message), info.value


@pytest.mark.parametrize("loss", ["kl_div_loss_2d", "js_div_loss_2d", "jukebox_loss"])
def test_an_empty_batch_reduces_as_torchs_own_losses_do(loss: str) -> None:
    """N = 0 let torch's "cannot reshape tensor of 0 elements" (kl/js) and MKL's "Inconsistent configuration
    parameters" (jukebox) out under the field inputs (an audit, 2026-12-06); torch's own losses give the empty
    reduction: sum 0, mean NaN, 'none' empty, with gradients of the inputs' shapes."""
    tensors, params = REGISTRY.get(loss).example_inputs(torch.float32)
    empty = {k: v[:0] for k, v in tensors.items()}
    expected = {"sum": F.mse_loss(torch.zeros(0), torch.zeros(0), reduction="sum"),
                "mean": F.mse_loss(torch.zeros(0), torch.zeros(0))}
    for reduction, value in expected.items():
        r = evaluate(REGISTRY, loss, empty, {**params, "reduction": reduction})
        assert torch.equal(r.loss, value) or (r.loss.isnan() and value.isnan()), (reduction, r.loss)
        assert all(r.grads[k].shape == empty[k].shape for k in r.grads)
    assert evaluate(REGISTRY, loss, empty, {**params, "reduction": "none"}).loss.numel() == 0
