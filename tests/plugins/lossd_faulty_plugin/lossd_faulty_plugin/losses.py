"""Plugin losses that misbehave; each computes ``((input - target) ** 2).sum()`` when it does compute."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import torch

from lossd.server.losses import Input, Param, register_loss

PRED = Input("input", "prediction", differentiable=True)
TARGET = Input("target", "target")

#: What ``raising_loss`` and ``raising_backward_loss`` raise, by the name their ``what`` param takes.
RAISES: dict[str, type[BaseException]] = {
    e.__name__: e for e in (SystemExit, KeyboardInterrupt, GeneratorExit, StopIteration, StopAsyncIteration,
                            asyncio.CancelledError, KeyError)
}
WHAT = Param("what", "string", "SystemExit", "the exception to raise", choices=tuple(RAISES))


def _example(dtype: torch.dtype) -> dict[str, Any]:
    return {"input": torch.tensor([1.0, 2.0], dtype=dtype), "target": torch.tensor([0.0, 1.0], dtype=dtype)}


def _register(name: str, *params: Param) -> Any:
    return register_loss(name, inputs=(PRED, TARGET), params=params, description=name, example=_example)


@_register("raising_loss", WHAT)
def raising_loss(input: torch.Tensor, target: torch.Tensor, *, what: str) -> torch.Tensor:
    raise RAISES[what]("raised by a plugin loss")


class _RaisingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, what: str) -> torch.Tensor:
        ctx.what = what
        return x.sum()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        raise RAISES[ctx.what]("raised by a plugin loss's backward")


@_register("raising_backward_loss", WHAT)
def raising_backward_loss(input: torch.Tensor, target: torch.Tensor, *, what: str) -> torch.Tensor:
    return _RaisingBackward.apply((input - target) ** 2, what)


@_register("sleepy_loss", Param("seconds", "float", 0.0, "how long to sleep first", min=0.0, max=10.0))
def sleepy_loss(input: torch.Tensor, target: torch.Tensor, *, seconds: float) -> torch.Tensor:
    time.sleep(seconds)  # takes no CPU: a rule that counts CPU time never sees it
    return ((input - target) ** 2).sum()


@_register("appending_loss", Param("weights", "float_list", [1.0], "summed, then appended to (a defect)"),
           Param("options", "object", None, "its count is read, then raised (a defect)", nullable=True))
def appending_loss(input: torch.Tensor, target: torch.Tensor, *, weights: list[float],
                   options: dict[str, Any] | None) -> torch.Tensor:
    scale = sum(weights) + (options or {}).get("count", 0)
    weights.append(1.0)
    if options is not None:
        options["count"] = options.get("count", 0) + 1
    return ((input - target) ** 2).sum() * scale
