"""An evaluation's loss holds its own elements only: torch's reduced losses can be views of the
unreduced buffer (mse_loss's mean: a 0-d result over the whole squared-error buffer), which would stay
allocated until the reply is sent (docs/performance.md, "Peak RSS"). The copy keeps the same bits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossd.server.evaluation import evaluate
from lossd.server.losses import REGISTRY


def test_a_reduced_loss_keeps_no_unreduced_buffer_and_the_same_bits() -> None:
    x, y = torch.randn(100_000, generator=torch.Generator().manual_seed(0)), torch.zeros(100_000)
    for reduction in ("mean", "sum", "none"):
        local = F.mse_loss(x.clone().requires_grad_(), y, reduction=reduction)
        r = evaluate(REGISTRY, "mse_loss", {"input": x, "target": y}, {"reduction": reduction})
        assert r.loss.untyped_storage().nbytes() == r.loss.numel() * 4
        assert torch.equal(r.loss, local.detach()) and r.loss.dtype == local.dtype
