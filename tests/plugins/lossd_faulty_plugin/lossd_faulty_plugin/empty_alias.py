"""A plugin alias that is empty once normalised (``torch.nn.``): it would take ``loss=""``; refused."""

from __future__ import annotations

import torch

from lossd.server.losses import Input, register_loss


@register_loss("empty_alias_loss", aliases=("torch.nn.",), inputs=(Input("input", "prediction", differentiable=True),),
               description="d", example=lambda dt: {"input": torch.ones(2, dtype=dt)})
def empty_alias_loss(input: torch.Tensor) -> torch.Tensor:
    return input.sum()
