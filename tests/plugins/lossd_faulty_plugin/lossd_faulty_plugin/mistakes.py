"""Plugin losses with the mistakes of their own code an operator may ship (the plugin audit, 2026-12-06): each
should be an internal error, logged, not the client's "rejected the inputs" nor a silently wrong answer."""

from __future__ import annotations

import torch

from lossd.server.losses import Input, register_loss


def _example(dtype: torch.dtype) -> dict[str, torch.Tensor]:  # its own: importing .losses here would register
    return {"input": torch.tensor([1.0, 2.0], dtype=dtype), "target": torch.tensor([0.0, 1.0], dtype=dtype)}  # them

PRED = Input("input", "prediction", differentiable=True)
TARGET = Input("target", "target", differentiable=True)


def _register(name: str):  # type: ignore[no-untyped-def]
    return register_loss(name, inputs=(PRED, TARGET), description=name, example=_example)


@_register("dividing_loss")
def dividing_loss(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((input - target) ** 2).sum() * (1 / (len(input) - len(target)))  # a Python 1 / 0


@_register("none_arithmetic_loss")
def none_arithmetic_loss(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    weight = None  # an optional input the plugin forgot is absent
    return ((input - target) ** 2 * weight).sum()  # type: ignore[operator]


@_register("inplace_target_loss")
def inplace_target_loss(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        target.add_(100)  # the next term of an objective reads the same tensor
    return ((input - target) ** 2).sum()


@_register("detached_loss")
def detached_loss(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((input - target) ** 2).sum().detach()  # no gradient: zeros were returned as if they were right
