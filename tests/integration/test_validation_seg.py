"""The MONAI segmentation / registration losses of #16 through a real server: each refusal names the field and
the rule and the server keeps serving; a request with the extra inputs (a class distance matrix, AUCM's
auxiliary variables) gives the reference's numbers and gradients over the wire."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from support.refs.auc import aucm
from support.refs.wasserstein_dice import gwdl
from support.refusals import assert_refused

f64 = torch.float64


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


def _p(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


@pytest.mark.parametrize(("loss", "field", "rule", "kw"), [
    ("generalized_wasserstein_dice_loss", "inputs.dist_matrix", "[3, 3]",
     {"input": _x(2, 3, 4), "target": torch.zeros(2, 4, dtype=torch.long), "dist_matrix": torch.ones(2, 2, dtype=f64)}),
    ("GeneralizedWassersteinDiceLoss", "inputs.dist_matrix", ">= 0",
     {"input": _x(2, 3, 4), "target": torch.zeros(2, 4, dtype=torch.long), "dist_matrix": -torch.ones(3, 3, dtype=f64)}),
    ("soft_cldice_loss", "inputs.input", "(N, C, H, W) or (N, C, D, H, W)", {"input": _p(2, 1, 4), "target": _p(2, 1, 4)}),
    ("SoftDiceclDiceLoss", "params.iter_", "[0, 100]",
     {"input": _p(1, 2, 3, 3), "target": torch.zeros(1, 3, 3, dtype=torch.long), "iter_": 101}),
    ("AsymmetricUnifiedFocalLoss", "inputs.input", "binary segmentation", {"input": _p(2, 3, 4), "target": _p(2, 3, 4)}),
    ("asymmetric_focal_tversky_loss", "params.gamma", "[0, 1]",
     {"input": _p(2, 2, 4), "target": torch.zeros(2, 4, dtype=torch.long), "gamma": 1.5}),
    ("dice_loss", "inputs.mask", "0 or 1",
     {"input": _x(2, 3, 4), "target": torch.zeros(2, 4, dtype=torch.long), "mask": torch.full((2, 1, 4), 0.5, dtype=f64),
      "mode": "multiclass", "mask_target": "class_indices"}),
    ("sigmoid_focal_loss", "params.class_alpha", "alpha -1",
     {"input": _x(2, 3), "target": _p(2, 3), "class_alpha": [0.2, 0.3, 0.5]}),
    ("sigmoid_focal_loss", "params.average_space", "reduction 'sum'", {"input": _x(2, 3, 4), "target": _p(2, 3, 4),
                                                                         "average_space": True}),
    ("generalized_box_iou_loss", "inputs.boxes1", "z1 <= z2",
     {"boxes1": torch.tensor([[0.0, 0, 2, 1, 1, 1]], dtype=f64), "boxes2": torch.ones(1, 6, dtype=f64)}),
    ("distance_box_iou_loss", "inputs.boxes1", "(N, 4) or (4)", {"boxes1": torch.zeros(2, 6, dtype=f64),
                                                                "boxes2": torch.zeros(2, 6, dtype=f64)}),
    ("NACLLoss", "inputs.target", "[2, 4, 4]", {"input": _x(2, 3, 4, 4), "target": torch.zeros(2, 4, dtype=torch.long)}),
    ("AUCMLoss", "inputs.target", "0 or 1", {"input": _x(4, 1), "target": torch.full((4, 1), 0.5, dtype=f64)}),
    ("bending_energy_loss", "inputs.input", "one per spatial dim", {"input": _x(2, 1, 5, 5)}),
    ("LocalNormalizedCrossCorrelationLoss", "params.kernel_size", "odd", {"input": _p(2, 1, 5), "target": _p(2, 1, 5),
                                                                         "kernel_size": 4}),
    ("GlobalMutualInformationLoss", "inputs.input", "max > min",
     {"input": torch.zeros(2, 3, dtype=f64), "target": torch.zeros(2, 3, dtype=f64), "kernel_type": "b-spline"}),
    ("PatchAdversarialLoss", "params.target_is_real", "generator",
     {"input": _x(2, 3), "target_is_real": False, "for_discriminator": False}),
])
def test_refusals_name_field_and_rule(client: Any, loss: str, field: str, rule: str, kw: dict[str, Any]) -> None:
    assert_refused(client, loss, field, rule, **kw)


def test_wasserstein_dice_with_its_distance_matrix_over_the_wire(client: Any) -> None:
    tensors = {"input": _x(2, 3, 5, seed=1), "target": torch.tensor([[0, 2, 1, 1, 0], [2, 2, 0, 1, 1]]),
               "dist_matrix": torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.5], [1.0, 0.5, 0.0]], dtype=f64)}
    r = client.evaluate("generalized_wasserstein_dice_loss", weighting_mode="GDL", **tensors)
    leaf = tensors["input"].clone().requires_grad_()
    expected = gwdl({**tensors, "input": leaf}, {"weighting_mode": "GDL"})
    (grad,) = torch.autograd.grad(expected, leaf)
    assert r.value == pytest.approx(expected.item(), rel=1e-12)
    torch.testing.assert_close(torch.as_tensor(r.grads["input"]), grad, rtol=1e-10, atol=1e-12)


def test_aucm_returns_the_gradients_of_its_auxiliary_variables(client: Any) -> None:
    aux = {"a": torch.tensor(0.3, dtype=f64), "b": torch.tensor(-0.2, dtype=f64), "alpha": torch.tensor(0.7, dtype=f64)}
    tensors = {"input": _x(8, 1, seed=2), "target": (_p(8, 1, seed=3) > 0.5).to(f64), **aux}
    r = client.evaluate("aucm_loss", version="v2", **tensors)
    leaves = {k: v.clone().requires_grad_() for k, v in aux.items()}
    expected = aucm({**tensors, **leaves}, {"version": "v2"})
    grads = torch.autograd.grad(expected, list(leaves.values()))
    assert r.value == pytest.approx(expected.item(), rel=1e-12)
    for name, g in zip(leaves, grads):
        assert float(torch.as_tensor(r.grads[name])) == pytest.approx(g.item(), rel=1e-10, abs=1e-12)
