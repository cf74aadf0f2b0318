"""A plugin whose second loss declares a default its own param refuses: the loader refuses the whole plugin."""

from __future__ import annotations

import torch

from lossd.server.losses import Input, Param, register_loss

PRED = Input("input", "prediction", differentiable=True)


@register_loss("fine_loss", inputs=(PRED,), description="d", example=lambda dt: {"input": torch.ones(2, dtype=dt)})
def fine_loss(input: torch.Tensor) -> torch.Tensor:
    return input.sum()


@register_loss("bad_default_loss", inputs=(PRED,), description="d",
               example=lambda dt: {"input": torch.ones(2, dtype=dt)},
               params=(Param("weights", "float_list", torch.tensor([1.0, 2.0]), "a tensor, not a list"),))
def bad_default_loss(input: torch.Tensor, *, weights: list[float]) -> torch.Tensor:
    return input.sum()
