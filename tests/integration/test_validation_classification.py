"""Classification losses: what torch leaves unchecked is refused, naming the field and the rule.

Each case was seen on torch 2.13 CPU: torch returns a number (uninitialised memory
for an empty batch of multi_margin / multilabel_margin, a finite loss for BCE-with-
logits targets outside [0, 1] or soft-margin targets outside +-1, NaN soft-margin
targets) or fails with a message that does not name the input. Every test also
checks that the server still answers afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lossd.client import Unimplemented
from support.refusals import assert_domain_warning, assert_refused, assert_still_serves

f64 = torch.float64
NAN = float("nan")


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


_still_serves = assert_still_serves
_refused = assert_refused


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("alias", "name"),
    [("NLLLoss", "nll_loss"), ("nll", "nll_loss"), ("BCELoss", "binary_cross_entropy"),
     ("bce", "binary_cross_entropy"), ("BCEWithLogitsLoss", "binary_cross_entropy_with_logits"),
     ("bce_with_logits", "binary_cross_entropy_with_logits"), ("bce_logits", "binary_cross_entropy_with_logits"),
     ("KLDivLoss", "kl_div"), ("kl", "kl_div"), ("kl_div_loss", "kl_div"),
     ("MultiLabelSoftMarginLoss", "multilabel_soft_margin_loss"), ("MultiLabelMarginLoss", "multilabel_margin_loss"),
     ("MultiMarginLoss", "multi_margin_loss"), ("nn.SoftMarginLoss", "soft_margin_loss")],
)
def test_aliases(client: Any, alias: str, name: str) -> None:
    assert client.list_losses()  # the listing works with every entry registered
    info = {i.name: i for i in client.list_losses()}[name]
    assert alias.removeprefix("nn.") in info.aliases


def test_kl_div_lists_batchmean(client: Any) -> None:
    info = {i.name: i for i in client.list_losses()}["kl_div"]
    reduction = {p.name: p for p in info.params}["reduction"]
    assert set(reduction.choices) == {"none", "batchmean", "sum", "mean"}
    x = torch.log_softmax(_x(4, 3), 1)
    y = torch.softmax(_x(4, 3, seed=1), 1)
    batchmean = client.evaluate("kl", x, y, reduction="batchmean").value
    assert batchmean == pytest.approx(client.evaluate("kl", x, y, reduction="sum").value / 4)


def test_differentiable_flags_follow_torch(client: Any) -> None:
    info = {i.name: i for i in client.list_losses()}
    diff = {(n, i.name) for n, spec in info.items() for i in spec.inputs if i.differentiable}
    # torch's C++ kernels have no derivative for these weights
    for loss, inp in [("nll_loss", "weight"), ("binary_cross_entropy", "weight"),
                      ("binary_cross_entropy_with_logits", "weight"),
                      ("binary_cross_entropy_with_logits", "pos_weight"), ("multi_margin_loss", "weight"),
                      ("soft_margin_loss", "target"), ("cross_entropy", "weight")]:
        assert (loss, inp) not in diff
    # these are computed by differentiable tensor ops
    for loss, inp in [("binary_cross_entropy", "target"), ("binary_cross_entropy_with_logits", "target"),
                      ("kl_div", "target"), ("multilabel_soft_margin_loss", "weight"),
                      ("multilabel_soft_margin_loss", "target"), ("cross_entropy", "target")]:
        assert (loss, inp) in diff


# ---------------------------------------------------------------- cross entropy, NLL


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("target", [[0, 3], [-1, 0], [-100, 5]], ids=["too-large", "negative", "beyond-ignored"])
def test_class_index_out_of_range(client: Any, loss: str, target: list[int]) -> None:
    _refused(client, loss, "inputs.target", "class indices must lie in [0, 3)",
             y_pred=_x(2, 3), y_true=torch.tensor(target))


def test_class_index_out_of_range_k_dimensional(client: Any) -> None:
    target = torch.zeros(2, 4, 4, dtype=torch.int64)
    target[1, 2, 3] = 7
    _refused(client, "nll_loss", "inputs.target", "class indices must lie in [0, 3)", y_pred=_x(2, 3, 4, 4),
             y_true=target)


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss", "multi_margin_loss"])
def test_class_weight_needs_one_per_class(client: Any, loss: str) -> None:
    _refused(client, loss, "inputs.weight", "must have shape [3]", y_pred=_x(2, 3), y_true=torch.tensor([0, 2]),
             weight=torch.ones(4, dtype=f64))


def test_probability_targets_outside_unit_interval_warn(client: Any) -> None:
    # torch returns a finite loss for "probabilities" like 2 and -1: computed, with a warning
    y = torch.tensor([[2.0, -1.0, 0.0], [0.0, 0.0, 1.0]], dtype=f64)
    r = assert_domain_warning(client, "cross_entropy", "inputs.target", "class probabilities lie in [0, 1]",
                              y_pred=_x(2, 3), y_true=y)
    assert r.value == torch.nn.functional.cross_entropy(_x(2, 3), y).item()


def test_probability_targets_need_input_shape(client: Any) -> None:
    _refused(client, "cross_entropy", "inputs.target", "must have the same shape as input",
             y_pred=_x(2, 3), y_true=torch.full((2, 2), 0.5, dtype=f64))


def test_ignore_index_with_probability_targets(client: Any) -> None:
    _refused(client, "cross_entropy", "params.ignore_index", "class-index targets only",
             y_pred=_x(2, 3), y_true=torch.softmax(_x(2, 3, seed=1), 1), ignore_index=1)


def test_negative_label_smoothing(client: Any) -> None:
    # torch computes a negative label_smoothing as 0: computed the same, with a warning (refused when strict)
    x, y = _x(2, 3), torch.tensor([0, 1])
    for loss, extra in (("cross_entropy", {}), ("linear_cross_entropy", {"linear_weight": _x(3, 3, seed=2)})):
        expected = getattr(torch.nn.functional, loss)(
            *((x, extra["linear_weight"], y) if extra else (x, y)), label_smoothing=-0.1)
        assert expected.item() == getattr(torch.nn.functional, loss)(
            *((x, extra["linear_weight"], y) if extra else (x, y))).item()
        r = assert_domain_warning(client, loss, "params.label_smoothing", "label_smoothing >= 0",
                                  y_pred=x, y_true=y, label_smoothing=-0.1, **extra)
        assert r.value == expected.item()
    _refused(client, "cross_entropy", "params.label_smoothing", "<= 1", y_pred=x, y_true=y, label_smoothing=1.5)


def test_nll_float_target_is_refused(client: Any) -> None:
    _refused(client, "nll_loss", "inputs.y_true", "integer dtype", y_pred=_x(2, 3),
             y_true=torch.tensor([0.0, 1.0], dtype=f64))


def test_nll_equals_cross_entropy_of_log_softmax(client: Any) -> None:
    x, y, w = _x(5, 4), torch.tensor([0, 3, 1, 1, 2]), torch.rand(4, dtype=f64) + 0.5
    ce = client.evaluate("ce", x, y, weight=w)
    nll = client.evaluate("nll", torch.log_softmax(x, 1), y, weight=w)
    assert ce.value == pytest.approx(nll.value, rel=1e-12)
    assert set(nll.grads) == {"y_pred"}


# ---------------------------------------------------------------- binary cross entropy


@pytest.mark.parametrize("bad", [1.5, -0.1, NAN], ids=["above-1", "negative", "nan"])
def test_bce_probability_input_outside_unit_interval(client: Any, bad: float) -> None:
    # allow_non_finite: the loss's own rule, which holds when the request lets NaN through the
    # server's general non-finite check (tests/integration/test_non_finite.py); likewise below.
    _refused(client, "binary_cross_entropy", "inputs.input", "must lie in [0, 1]",
             y_pred=torch.tensor([0.5, bad], dtype=f64), y_true=torch.tensor([1.0, 0.0], dtype=f64),
             allow_non_finite=True)


@pytest.mark.parametrize("bad", [2.0, -1.0, NAN], ids=["above-1", "negative", "nan"])
def test_bce_targets_outside_unit_interval_are_refused(client: Any, bad: float) -> None:
    # torch's binary_cross_entropy refuses them too
    _refused(client, "binary_cross_entropy", "inputs.target", "must lie in [0, 1]",
             y_pred=torch.tensor([[0.5, 0.25]], dtype=f64), y_true=torch.tensor([[1.0, bad]], dtype=f64),
             allow_non_finite=True)


@pytest.mark.parametrize("loss", ["binary_cross_entropy_with_logits", "multilabel_soft_margin_loss"])
@pytest.mark.parametrize("bad", [2.0, -1.0, NAN], ids=["above-1", "negative", "nan"])
def test_binary_targets_outside_unit_interval_warn(client: Any, loss: str, bad: float) -> None:
    # BCE-with-logits and multilabel soft margin return a finite loss for targets 2 or -1
    x, y = torch.tensor([[0.5, 0.25]], dtype=f64), torch.tensor([[1.0, bad]], dtype=f64)
    r = assert_domain_warning(client, loss, "inputs.target", "lie in [0, 1]", y_pred=x, y_true=y,
                              allow_non_finite=True)
    expected = getattr(torch.nn.functional, loss)(x, y)
    assert r.loss.dtype == expected.dtype
    assert torch.equal(r.loss, expected) or (bool(r.loss.isnan()) and bool(expected.isnan()))


@pytest.mark.parametrize("loss", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
def test_target_with_another_shape_is_refused(client: Any, loss: str) -> None:
    _refused(client, loss, "inputs.target", "must have the same shape as input",
             y_pred=torch.full((4, 3), 0.5, dtype=f64), y_true=torch.ones(4, 1, dtype=f64))


@pytest.mark.parametrize("loss", ["kl_div", "soft_margin_loss", "multilabel_soft_margin_loss"])
def test_target_with_another_shape_warns(client: Any, loss: str) -> None:
    # torch broadcasts silently: computed, with lossd's warning; strict refuses
    assert_domain_warning(client, loss, "inputs.target", "the input's shape",
                          y_pred=torch.full((4, 3), 0.5, dtype=f64), y_true=torch.ones(4, 1, dtype=f64),
                          reduction="sum")


def test_bce_weight_must_broadcast(client: Any) -> None:
    _refused(client, "binary_cross_entropy", "inputs.weight", "must broadcast to the input's shape [4, 3]",
             y_pred=torch.full((4, 3), 0.5, dtype=f64), y_true=torch.ones(4, 3, dtype=f64),
             weight=torch.ones(2, 4, 3, dtype=f64))


def test_pos_weight_must_broadcast(client: Any) -> None:
    _refused(client, "binary_cross_entropy_with_logits", "inputs.pos_weight", "must broadcast",
             y_pred=_x(4, 3), y_true=torch.ones(4, 3, dtype=f64), pos_weight=torch.ones(2, dtype=f64))


def test_bce_with_logits_grads_exclude_weights(client: Any) -> None:
    r = client.evaluate("bce_with_logits", _x(4, 3), torch.ones(4, 3, dtype=f64), weight=torch.ones(3, dtype=f64),
                        pos_weight=torch.full((3,), 2.0, dtype=f64))
    assert set(r.grads) == {"y_pred", "y_true"}


# ---------------------------------------------------------------- margin losses


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss", ["multi_margin_loss", "multilabel_margin_loss"])
def test_empty_batch_is_refused_when_reduced(client: Any, loss: str, reduction: str) -> None:
    # torch's CPU kernel reduces uninitialised memory here (e.g. -838207.0 for 'mean')
    target = torch.zeros(0, dtype=torch.int64) if loss == "multi_margin_loss" else torch.zeros(0, 3, dtype=torch.int64)
    _refused(client, loss, "inputs.input", "empty batch", y_pred=torch.zeros(0, 3, dtype=f64), y_true=target,
             reduction=reduction)


@pytest.mark.parametrize("loss", ["multi_margin_loss", "multilabel_margin_loss"])
def test_empty_batch_with_reduction_none_is_empty(client: Any, loss: str) -> None:
    target = torch.zeros(0, dtype=torch.int64) if loss == "multi_margin_loss" else torch.zeros(0, 3, dtype=torch.int64)
    r = client.evaluate(loss, torch.zeros(0, 3, dtype=f64), target, reduction="none")
    assert tuple(r.loss.shape) == (0,) and tuple(r.grads["y_pred"].shape) == (0, 3)


@pytest.mark.parametrize("target", [[[0, 3, -1]], [[0, -2, -1]]], ids=["too-large", "below-padding"])
def test_multilabel_margin_labels_out_of_range(client: Any, target: list[list[int]]) -> None:
    _refused(client, "multilabel_margin_loss", "inputs.target", "labels must lie in [0, 3), padded with -1",
             y_pred=_x(1, 3), y_true=torch.tensor(target))


def test_multilabel_margin_target_shape(client: Any) -> None:
    _refused(client, "multilabel_margin_loss", "inputs.target", "must have the input's shape",
             y_pred=_x(2, 3), y_true=torch.tensor([[0, -1], [1, -1]]))


def test_multi_margin_target_out_of_range(client: Any) -> None:
    _refused(client, "multi_margin_loss", "inputs.target", "class indices must lie in [0, 3)",
             y_pred=_x(2, 3), y_true=torch.tensor([0, 3]))


@pytest.mark.parametrize("p", [0, 3])
def test_multi_margin_p_is_1_or_2(client: Any, p: int) -> None:
    _refused(client, "multi_margin_loss", "params.p", "[1, 2]", y_pred=_x(2, 3), y_true=torch.tensor([0, 1]), p=p)


@pytest.mark.parametrize("loss", ["multi_margin_loss", "multilabel_margin_loss"])
def test_margin_losses_say_why_half_precision_fails_on_cpu(client: Any, loss: str) -> None:
    if torch.cuda.is_available():
        pytest.skip("the server computes on CUDA here, whose kernels support float16")
    target = torch.tensor([0, 1]) if loss == "multi_margin_loss" else torch.tensor([[0, -1, 0], [1, 2, -1]])
    with pytest.raises(Unimplemented) as err:
        client.evaluate(loss, _x(2, 3).half(), target)
    assert "Half" in err.value.message and "cannot" in err.value.message
    _still_serves(client)


@pytest.mark.parametrize("bad", [0.0, 2.0, 0.5], ids=["zero", "two", "half"])
def test_soft_margin_targets_other_than_plus_minus_one_warn(client: Any, bad: float) -> None:
    # torch returns a finite loss for any target value: computed, with a warning
    y = torch.tensor([1.0, -1.0, bad], dtype=f64)
    r = assert_domain_warning(client, "soft_margin_loss", "inputs.target", "values are 1 or -1", y_pred=_x(3),
                              y_true=y)
    assert r.value == torch.nn.functional.soft_margin_loss(_x(3), y).item()


def test_soft_margin_nan_target_warns_when_non_finite_is_allowed(client: Any) -> None:
    assert_domain_warning(client, "soft_margin_loss", "inputs.target", "values are 1 or -1",
                          y_pred=_x(3), y_true=torch.tensor([1.0, NAN, -1.0], dtype=f64), allow_non_finite=True)


def test_multilabel_soft_margin_needs_a_class_dimension(client: Any) -> None:
    _refused(client, "multilabel_soft_margin_loss", "inputs.input", "class dimension",
             y_pred=torch.tensor(0.5, dtype=f64), y_true=torch.tensor(1.0, dtype=f64))
