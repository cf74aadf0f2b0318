"""A plugin whose loss declares a param its function does not take: every call failed, as the client's
"rejected the inputs", and nothing was logged. The loader refuses it at start."""

from __future__ import annotations

import torch

from lossd.server.losses import Input, Param, register_loss


def _example(dtype: torch.dtype) -> dict[str, torch.Tensor]:  # its own: importing .losses here would register
    return {"input": torch.tensor([1.0, 2.0], dtype=dtype), "target": torch.tensor([0.0, 1.0], dtype=dtype)}  # them


@register_loss("undeclared_param_loss", inputs=(Input("input", "prediction"), Input("target", "target")),
               params=(Param("alpha", "float", 1.0, "declared, not taken"),), description="d", example=_example)
def undeclared_param_loss(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((input - target) ** 2).sum()
