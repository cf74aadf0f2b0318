"""A real EvaluateLoss that takes about as long as a test needs on the machine it runs on.

``ctc_loss`` costs time in proportion to batch × input length × target length, so
:func:`calibrated_ctc` times one evaluation on the server under test and scales the batch
until an evaluation takes about ``target_s`` seconds there (the suite runs on loaded
machines; a fixed size would be too fast on one and too slow on another).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from lossd.client import build_request
from lossd.v1 import lossd_pb2

__all__ = ["BIG_REPLIES", "calibrated_ctc", "ctc_request", "torch_ctc_value"]

#: Channel options for replies carrying big gradients (the client's default receive limit is 4 MiB).
BIG_REPLIES = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]

T, C, S = 1000, 40, 300


def _arrays(batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(batch)
    logits = rng.standard_normal((T, batch, C)).astype(np.float32)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return {"log_probs": log_probs.astype(np.float32), "targets": rng.integers(1, C, (batch, S)),
            "input_lengths": np.full(batch, T), "target_lengths": np.full(batch, S)}


def ctc_request(batch: int) -> lossd_pb2.EvaluateLossRequest:
    """A ``ctc_loss`` request with ``batch`` sequences of 1000 steps and 300 targets."""
    request, _ = build_request("ctc_loss", inputs=_arrays(batch))
    return request


def torch_ctc_value(batch: int) -> float:
    """What local torch says the loss of :func:`ctc_request` is."""
    import torch

    a = {k: torch.from_numpy(v) for k, v in _arrays(batch).items()}
    return float(torch.nn.functional.ctc_loss(a["log_probs"], a["targets"], a["input_lengths"],
                                              a["target_lengths"]))


def calibrated_ctc(stub: Any, target_s: float, start: int = 4, max_batch: int = 256) -> tuple[int, float]:
    """The batch whose evaluation on ``stub``'s server takes about ``target_s`` seconds, and the
    time the last timed evaluation took."""
    stub.EvaluateLoss(ctc_request(1), timeout=120)  # the first ctc_loss call warms torch up: not timed
    batch, took = start, 0.0
    for attempt in range(4):
        request = ctc_request(batch)
        begin = time.perf_counter()
        stub.EvaluateLoss(request, timeout=120)
        took = time.perf_counter() - begin
        if 0.7 * target_s <= took <= 1.5 * target_s or batch >= max_batch or attempt == 3:
            break
        batch = max(1, min(max_batch, math.ceil(batch * target_s / max(took, 1e-3))))
    return batch, took
