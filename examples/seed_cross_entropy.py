"""cross_entropy(logits, y) equals nll_loss(log_softmax(logits), y), through lossd's EvaluateLoss.

The seed's first lesson: PyTorch's cross entropy takes raw logits and applies
log_softmax itself. This script evaluates both forms remotely and checks
that the values agree, and that the gradient with respect to the logits is
softmax(logits) - onehot(y), averaged over the batch.

Run ``make run`` in another terminal, then ``python examples/seed_cross_entropy.py``.
"""

from __future__ import annotations

import sys

import numpy as np

from lossd.client import Client

LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0], [-2.0, 4.0, 0.0]], dtype=np.float64)
TARGET = np.array([0, 2, 1, 1], dtype=np.int64)


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def main() -> int:
    with Client() as client:
        ce = client.evaluate("cross_entropy", LOGITS, TARGET)
        nll = client.evaluate("nll_loss", log_softmax(LOGITS), TARGET)
    expected_grad = (np.exp(log_softmax(LOGITS)) - np.eye(3)[TARGET]) / len(TARGET)
    grad = np.asarray(ce.grads["y_pred"])
    print(f"cross_entropy(logits)          = {ce.value:.12f}")
    print(f"nll_loss(log_softmax(logits))  = {nll.value:.12f}")
    print(f"d cross_entropy / d logits = (softmax - onehot) / N: {np.allclose(grad, expected_grad, atol=1e-12)}")
    ok = abs(ce.value - nll.value) < 1e-12 and np.allclose(grad, expected_grad, atol=1e-12)
    print("equal" if ok else "DIFFERENT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
