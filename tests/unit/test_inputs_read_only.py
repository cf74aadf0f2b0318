"""The server wraps received bytes without a copy, so no loss may write to its inputs.

``decode_tensor`` hands losses tensors over the request's own (immutable) bytes.
torch has no read-only tensors, so this checks the property directly: every
registered loss, run through the engine on its documented example, leaves
its input tensors (and grad_output) bit for bit as they were.
"""

from __future__ import annotations

import pytest
import torch

from lossd.server.evaluation import evaluate
from lossd.server.losses import REGISTRY


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return torch.equal(a, b)


@pytest.mark.parametrize("name", [spec.name for spec in REGISTRY])
def test_loss_leaves_its_inputs_untouched(name):
    spec = REGISTRY.get(name)
    tensors, params = spec.example_inputs(torch.float64)
    before = {k: v.clone() for k, v in tensors.items()}
    result = evaluate(REGISTRY, name, tensors, params)
    for k, v in tensors.items():
        assert _same(v, before[k]), f"{name} wrote to its input {k!r}"
    if result.loss.dim() > 0:  # and with an explicit grad_output (a vector-Jacobian product)
        upstream = torch.ones_like(result.loss)
        evaluate(REGISTRY, name, tensors, params, grad_output=upstream)
        assert _same(upstream, torch.ones_like(result.loss)), f"{name} wrote to grad_output"
        for k, v in tensors.items():
            assert _same(v, before[k]), f"{name} wrote to its input {k!r}"
