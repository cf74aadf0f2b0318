"""Sequence losses (CTC): references in local torch and test cases."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from support.parity import Case, Reference, randn

_ORDER = ("log_probs", "targets", "input_lengths", "target_lengths")

REFERENCES = {
    "ctc_loss": Reference(
        functional=lambda t, p: F.ctc_loss(*(t[k] for k in _ORDER), **p),
        module=lambda t, p: nn.CTCLoss(**p)(*(t[k] for k in _ORDER)),
    ),
}


def log_probs(*shape: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """log_softmax over the last dim, computed in float64 then cast."""
    return torch.log_softmax(randn(*shape, dtype=torch.float64, seed=seed), dim=-1).to(dtype)


def _padded(dt: torch.dtype) -> dict[str, torch.Tensor]:
    return {
        "log_probs": log_probs(8, 3, 5, dtype=dt),
        "targets": torch.tensor([[1, 2, 2, 4], [3, 1, 0, 0], [4, 4, 1, 2]]),  # padding past each length
        "input_lengths": torch.tensor([8, 6, 7]),
        "target_lengths": torch.tensor([3, 2, 4]),
    }


def _concatenated(dt: torch.dtype) -> dict[str, torch.Tensor]:
    return {
        "log_probs": log_probs(7, 2, 4, dtype=dt, seed=1),
        "targets": torch.tensor([1, 3, 3, 2, 1], dtype=torch.int32),  # int32: the server casts to int64
        "input_lengths": torch.tensor([7, 5], dtype=torch.int32),
        "target_lengths": torch.tensor([3, 2], dtype=torch.int32),
    }


def _unbatched(dt: torch.dtype) -> dict[str, torch.Tensor]:
    return {
        "log_probs": log_probs(6, 4, dtype=dt, seed=2),
        "targets": torch.tensor([1, 2, 3]),  # 1-D: exactly target_length labels
        "input_lengths": torch.tensor(6),
        "target_lengths": torch.tensor(3),
    }


def _unbatched_padded(dt: torch.dtype) -> dict[str, torch.Tensor]:
    return {
        "log_probs": log_probs(6, 4, dtype=dt, seed=4),
        "targets": torch.tensor([[3, 3, 1, 0]]),  # (1, S) padded
        "input_lengths": torch.tensor([5]),
        "target_lengths": torch.tensor([3]),
    }


def _blank_last_infeasible(dt: torch.dtype) -> dict[str, torch.Tensor]:
    # blank = 3 (the last class); sequence 1 is too short for its target (inf loss).
    return {
        "log_probs": log_probs(5, 3, 4, dtype=dt, seed=3),
        "targets": torch.tensor([[0, 1, 2], [1, 1, 1], [2, 0, 0]]),
        "input_lengths": torch.tensor([5, 4, 3]),
        "target_lengths": torch.tensor([3, 3, 0]),
    }


CASES = {
    "ctc_loss": [
        Case("padded", _padded),
        Case("concatenated-int32", _concatenated, params={"zero_infinity": True}),
        Case("unbatched", _unbatched),
        Case("unbatched-padded", _unbatched_padded),
        Case("blank-last-zero-infinity", _blank_last_infeasible, params={"blank": 3, "zero_infinity": True}),
        Case("blank-last-infinite", _blank_last_infeasible, params={"blank": 3}, reductions=("none", "sum")),
    ],
}
