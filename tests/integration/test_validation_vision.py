"""The kornia / pytorch-toolbelt / smp losses of #16 through a real server: each refusal names the field and
the rule and the server keeps serving; a library name that means something else is NOT_FOUND naming what to send;
the new multiclass focal form equals its reference."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lossd.client import NotFound
from support.refs.custom import sigmoid_focal
from support.refusals import assert_refused, assert_still_serves

f64 = torch.float64


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


@pytest.mark.parametrize(("loss", "field", "rule", "kw"), [
    ("psnr_loss", "inputs.target", "same shape", {"y_pred": _x(2, 3), "y_true": _x(3, 2)}),
    ("total_variation_loss", "inputs.input", "(*, H, W)", {"y_pred": _x(4)}),
    ("mutual_information_loss", "inputs.input", "at least signal_dims (3)",
     {"y_pred": _x(2, 4), "y_true": _x(2, 4), "signal_dims": 3}),
    ("kl_div_loss_2d", "inputs.input", ">= 0", {"y_pred": -_x(1, 1, 2, 2).abs(), "y_true": _x(1, 1, 2, 2).abs()}),
    ("inverse_depth_smoothness_loss", "inputs.target", "(H, W)", {"y_pred": _x(1, 1, 3, 4), "y_true": _x(1, 3, 4, 3)}),
    ("bi_tempered_logistic_loss", "inputs.target", "[0, 3)",
     {"y_pred": _x(2, 3), "y_true": torch.tensor([0, 5]), "t1": 0.8, "t2": 1.2}),
    ("balanced_binary_cross_entropy_with_logits", "inputs.target", "input's shape", {"y_pred": _x(2, 3), "y_true": _x(3)}),
    ("boundary_loss", "params.include_background", "more than one channel",
     {"y_pred": _x(1, 1, 3, 3).sigmoid(), "y_true": torch.ones(1, 1, 3, 3, dtype=f64), "include_background": False}),
    ("sigmoid_focal_loss", "inputs.target", "class indices (an integer dtype)",
     {"y_pred": _x(2, 3, 4), "y_true": _x(2, 4), "mode": "multiclass"}),
])
def test_refusals_name_field_and_rule(client: Any, loss: str, field: str, rule: str, kw: dict[str, Any]) -> None:
    assert_refused(client, loss, field, rule, **kw)


@pytest.mark.parametrize(("name", "says"), [("focal", "binary_focal_loss"), ("SSIMLoss", "'one_minus'"),
                                            ("BinaryFocalLossWithLogits", "ignore_index -100"),
                                            ("LovaszSoftmaxLoss", "per_image true")])
def test_library_names_that_mean_something_else_are_not_found(client: Any, name: str, says: str) -> None:
    with pytest.raises(NotFound) as err:
        client.evaluate(name, _x(2, 3), _x(2, 3))
    assert says in err.value.message and "no alias" in err.value.message, err.value.message
    assert_still_serves(client)


def test_multiclass_focal_with_ignore_index_over_the_wire(client: Any) -> None:
    x, y = _x(2, 3, 4, seed=3), torch.tensor([[0, 2, 255, 1], [1, 255, 2, 0]])
    params = {"mode": "multiclass", "ignore_index": 255, "alpha": -1.0, "focal_form": "exp_bce"}
    r = client.evaluate("sigmoid_focal_loss", x, y, **params)
    assert r.value == pytest.approx(sigmoid_focal({"input": x, "target": y}, params).item(), rel=1e-12)
