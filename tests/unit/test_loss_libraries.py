"""Every "same numbers as the library" row of docs/losses.md gives the library's numbers:
the loss and its gradient, float64 (kornia and MONAI themselves; the others from their formulas)."""

from __future__ import annotations

import pytest
import torch

from lossd.server import evaluate
from lossd.server.losses import REGISTRY
from support.parity import randn
from support.refs.libraries import CHECKS, _seg_absent

ROWS = [pytest.param(spec.name, e, id=f"{spec.name}-{i}") for spec in REGISTRY for i, e in enumerate(spec.equivalents)]


def test_every_row_has_a_check() -> None:
    calls = {e.call for _, e in (p.values for p in ROWS)}
    assert calls <= set(CHECKS), f"rows without a check in tests/support/refs/libraries.py: {sorted(calls - set(CHECKS))}"


@pytest.mark.parametrize(("name", "row"), ROWS)
def test_row_gives_the_library_numbers(name, row) -> None:
    if row.call.startswith("kornia"):
        pytest.importorskip("kornia")
    if row.call.startswith("monai"):
        pytest.importorskip("monai")
        pytest.importorskip("scipy")
    tensors, library = CHECKS[row.call]()
    spec = REGISTRY.get(name)
    first = spec.inputs[0].name
    result = evaluate(REGISTRY, name, tensors, dict(row.params))
    leaves = {n: (t.clone().requires_grad_(n == first)) for n, t in tensors.items()}
    expected = library(leaves)
    (grad,) = torch.autograd.grad(expected, leaves[first], torch.ones_like(expected))
    # MONAI computes FocalLoss, its SSIM windows, its distance transforms, its boxes and the GDL weights of
    # GeneralizedWassersteinDiceLoss, NACLLoss's smoothed target, AUCMLoss's batch positive ratio, BoundaryLoss's
    # distances, the size ratios of BendingEnergyLoss / DiffusionLoss(normalize=True), LNCC's windows and the
    # mutual information's bin centres in float32
    rtol = 2e-5 if row.call.startswith("monai") and any(k in row.call for k in ("Focal", "SSIM", "Hausdorff", "Box", "GDL", "NACL", "AUCM", "Boundary",
                                                                     "normalize=True", "kernel_type=",
                                                                     "MutualInformation")) else 1e-9
    if "HausdorffER" in row.call or "MS_SSIMLoss" in row.call:
        rtol = 1e-6  # kornia holds its erosion kernel (0.2, 1/7) and its Gaussian windows in float32
    torch.testing.assert_close(result.loss, expected.detach().to(result.loss.dtype), rtol=rtol, atol=rtol)
    go = torch.ones_like(result.loss)
    if result.loss.dim() == 0:
        torch.testing.assert_close(result.grads[first], grad.to(result.grads[first].dtype), rtol=max(rtol, 1e-7), atol=max(rtol, 1e-7))
    else:
        assert go.shape == result.loss.shape


def test_no_library_check_is_written_twice() -> None:
    """CHECKS is written as dict literals (its definition and ``CHECKS.update({...})``): a key written
    twice silently drops the first check, whose row would then be checked by the other's code."""
    import ast
    import collections
    from pathlib import Path

    import support.refs.libraries as libraries

    literals = []
    for node in ast.walk(ast.parse(Path(libraries.__file__).read_text())):
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "CHECKS":
            literals.append(node.value)
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "CHECKS.update":
            literals.extend(node.args)
    assert literals and all(isinstance(d, ast.Dict) for d in literals)
    keys = []
    for d in literals:
        for k, v in zip(d.keys, d.values):  # type: ignore[attr-defined]
            if k is not None:
                keys.append(ast.literal_eval(k))
            else:  # **{...}: the keys that expression gives, in the module's namespace
                keys.extend(eval(compile(ast.Expression(v), "<checks>", "eval"), vars(libraries)))  # noqa: S307
    assert not [k for k, n in collections.Counter(keys).items() if n > 1]
    assert len(keys) == len(CHECKS)  # every check is written in one of those literals


@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5], [2.0, 2.0, 2.0], [0.0, 1.0, 1.0]])
@pytest.mark.parametrize("average", ["micro", "macro"])
def test_kornia_dice_weights_and_absent_classes(average, weight) -> None:
    """kornia 0.9's dice_loss: 'micro' weights each class's terms once (2Σ w·p·t / (Σ w·p + Σ w·t); lossd weighted
    the intersection twice: 0.65 for 0.73, and a uniform [2, 2, 2] halved the loss), 'macro' leaves a class absent
    from a sample's target out of its mean (lossd's documented row scored it: 0.74 for 0.62). A sample with only
    class 1, one without class 2, ignored pixels, a wholly ignored sample and a present class of weight 0."""
    kornia = pytest.importorskip("kornia")
    tensors = _seg_absent(seed=5)
    tensors["target"] = torch.cat([tensors["target"], torch.full((1, 4, 4), -100)])  # every pixel ignored
    tensors["input"] = torch.cat([tensors["input"], randn(1, 3, 4, 4, dtype=torch.float64, seed=7)])
    params = {"mode": "multiclass", "aggregation": "micro" if average == "micro" else "per_sample", "smooth_nr": 0.0,
              "smooth_dr": 1e-8, "eps": 0.0, "ignore_index": -100, "class_weights": weight}
    if average == "macro":
        params["empty_classes"] = "skip"
    result = evaluate(REGISTRY, "dice_loss", tensors, params, grad_inputs=["input"])
    x = tensors["input"].clone().requires_grad_()
    w = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    expected = kornia.losses.dice_loss(x, tensors["target"], average=average, weight=w)
    (grad,) = torch.autograd.grad(expected, x)
    torch.testing.assert_close(result.loss, expected.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result.grads["input"], grad, rtol=1e-9, atol=1e-12)
