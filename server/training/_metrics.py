"""Metrics at an epoch end: accuracy (binary or multi-class), mae, rmse, and the validation loss.

    >>> import torch
    >>> out = torch.tensor([[0.9], [0.2], [0.7]])
    >>> accuracy(out, torch.tensor([1, 0, 0]), threshold=0.5)
    0.6666666666666666
    >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 1]))
    1.0
    >>> round(rmse(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [0.0]])), 4)
    2.2361
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["accuracy", "mae", "rmse", "evaluate_split"]

#: Samples per forward pass when evaluating a whole split (bounds memory).
CHUNK = 16384


def accuracy(output: torch.Tensor, labels: torch.Tensor, threshold: float = 0.0) -> float:
    """Fraction of correct classes: ``output >= threshold`` for one output, else the argmax."""
    if output.shape[1] == 1:
        predicted = (output[:, 0] >= threshold).to(torch.int64)
    else:
        predicted = output.argmax(dim=1)
    return float((predicted == labels).to(torch.float64).mean())


def mae(output: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error over all elements."""
    return float((output.to(torch.float64) - target.to(torch.float64)).abs().mean())


def rmse(output: torch.Tensor, target: torch.Tensor) -> float:
    """Root mean squared error over all elements."""
    return float((output.to(torch.float64) - target.to(torch.float64)).pow(2).mean().sqrt())


def evaluate_split(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    labels: torch.Tensor | None,
    metrics: tuple[str, ...],
    prefix: str,
    threshold: float,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """``{prefix_metric: value}`` for one split in eval mode (no dropout), plus ``prefix_loss``
    when ``loss`` is given."""
    if len(x) == 0:
        return {}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        output = torch.cat([model(x[i:i + CHUNK]) for i in range(0, len(x), CHUNK)])
        out: dict[str, float] = {}
        if loss is not None:
            out[f"{prefix}_loss"] = float(loss(output, target))
    model.train(was_training)
    for name in metrics:
        if name == "accuracy":
            assert labels is not None
            out[f"{prefix}_accuracy"] = accuracy(output, labels, threshold)
        elif name == "mae":
            out[f"{prefix}_mae"] = mae(output, target)
        else:
            out[f"{prefix}_rmse"] = rmse(output, target)
    return out
