"""The tensors and requests the benchmarks send, and the in-process torch reference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["CLASSES", "Workload", "local_loop", "workload"]

#: cross_entropy workloads are (n / CLASSES, CLASSES) logits with int64 class targets.
CLASSES = 10


@dataclass
class Workload:
    """One evaluation: loss name, numpy inputs, and the request-tensor bytes it carries."""

    loss: str
    y_pred: np.ndarray
    y_true: np.ndarray

    @property
    def payload_bytes(self) -> int:
        return int(self.y_pred.nbytes + self.y_true.nbytes)


def workload(loss: str, n: int, seed: int = 0) -> Workload:
    """``n`` float32 prediction elements for ``mse_loss`` or ``cross_entropy``."""
    rng = np.random.default_rng(seed)
    if loss == "mse_loss":
        return Workload(loss, rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32))
    if loss == "cross_entropy":
        rows = max(1, n // CLASSES)
        logits = rng.standard_normal((rows, CLASSES), dtype=np.float32)
        return Workload(loss, logits, rng.integers(0, CLASSES, rows, dtype=np.int64))
    raise ValueError(f"no workload for {loss}")


def local_loop(w: Workload) -> Callable[[], object]:
    """One in-process evaluation of ``w`` with torch: the loss value and the same
    gradients the server returns (every floating-point input)."""
    import torch
    import torch.nn.functional as F

    pred, true = torch.from_numpy(w.y_pred), torch.from_numpy(w.y_true)
    fn = getattr(F, w.loss)
    float_target = true.is_floating_point()

    def run() -> object:
        x = pred.detach().requires_grad_(True)
        leaves = [x]
        y = true
        if float_target:
            y = true.detach().requires_grad_(True)
            leaves.append(y)
        loss = fn(x, y)
        grads = torch.autograd.grad(loss, leaves)
        return loss.item(), grads

    return run
