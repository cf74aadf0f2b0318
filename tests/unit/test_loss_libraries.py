"""Every "same numbers as the library" row of docs/losses.md gives the library's numbers:
the loss and its gradient, float64 (kornia and MONAI themselves; the others from their formulas)."""

from __future__ import annotations

import pytest
import torch

from lossd.server import evaluate
from lossd.server.losses import REGISTRY
from support.refs.libraries import CHECKS

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
    # MONAI computes FocalLoss, its SSIM windows, its distance transforms and its boxes in float32
    rtol = 2e-5 if row.call.startswith("monai") and any(k in row.call for k in ("Focal", "SSIM", "Hausdorff", "Box", "Boundary")) else 1e-9
    if "HausdorffER" in row.call or "MS_SSIMLoss" in row.call:
        rtol = 1e-6  # kornia holds its erosion kernel (0.2, 1/7) and its Gaussian windows in float32
    torch.testing.assert_close(result.loss, expected.detach().to(result.loss.dtype), rtol=rtol, atol=rtol)
    go = torch.ones_like(result.loss)
    if result.loss.dim() == 0:
        torch.testing.assert_close(result.grads[first], grad.to(result.grads[first].dtype), rtol=max(rtol, 1e-7), atol=max(rtol, 1e-7))
    else:
        assert go.shape == result.loss.shape
