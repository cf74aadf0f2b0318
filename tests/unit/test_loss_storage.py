"""An evaluation's loss holds its own elements only: torch's reduced losses can be views of the
unreduced buffer (mse_loss's mean: a 0-d result over the whole squared-error buffer), which would stay
allocated through the backward and until the reply is sent (docs/performance.md, item 5). The copy
keeps the same bits."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lossd.server.evaluation import Term, _evaluate, evaluate, evaluate_objective
from lossd.server.losses import REGISTRY


def test_a_reduced_loss_keeps_no_unreduced_buffer_and_the_same_bits() -> None:
    x, y = torch.randn(100_000, generator=torch.Generator().manual_seed(0)), torch.zeros(100_000)
    for reduction in ("mean", "sum", "none"):
        local = F.mse_loss(x.clone().requires_grad_(), y, reduction=reduction)
        r = evaluate(REGISTRY, "mse_loss", {"input": x, "target": y}, {"reduction": reduction})
        assert r.loss.untyped_storage().nbytes() == r.loss.numel() * 4
        assert torch.equal(r.loss, local.detach()) and r.loss.dtype == local.dtype


def test_the_backward_runs_without_the_unreduced_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy is made before the backward, so the squared-error buffer (40 MB at 10**7 float32
    elements) is freed before the gradients are allocated; the gradients keep torch's bits."""
    roots: list[int] = []
    real_grad = _evaluate.autograd_grad  # every evaluation's backward (call_backward)

    def spy(outputs: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        roots.append(outputs.untyped_storage().nbytes())
        return real_grad(outputs, *args, **kwargs)

    monkeypatch.setattr(_evaluate, "autograd_grad", spy)
    x, y = torch.randn(100_000, generator=torch.Generator().manual_seed(1)), torch.randn(100_000)
    lx, ly = x.clone().requires_grad_(), y.clone().requires_grad_()
    local = torch.autograd.grad(F.mse_loss(lx, ly), [lx, ly])
    r = evaluate(REGISTRY, "mse_loss", {"input": x, "target": y}, {})
    o = evaluate_objective(REGISTRY, [Term("mse_loss")], {"input": x, "target": y})
    assert roots == [4, 4]
    for got in (r, o):
        assert torch.equal(got.grads["input"], local[0]) and torch.equal(got.grads["target"], local[1])
