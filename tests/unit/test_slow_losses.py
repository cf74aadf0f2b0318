"""The rule that moves a loss off the event loop (``LossService._on_loop``): a loss whose small
evaluations take over ``INLINE_MAX_CPU_S`` of CPU, ``SLOW_IN_A_ROW`` calls in a row after its
first ``SLOW_WARMUP``, goes to the thread pool; warm-up calls and a lone slow call do not count."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import torch

from lossd.server.losses import REGISTRY
from lossd.server.rpc import LossService
from lossd.server.rpc._service import INLINE_MAX_CPU_S, SLOW_IN_A_ROW, SLOW_WARMUP
from lossd.v1 import lossd_pb2


def _burn(seconds: float) -> str:
    """Spend ``seconds`` of this thread's CPU (0: return at once)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return "done"


def _service() -> LossService:
    return LossService(REGISTRY, ThreadPoolExecutor(1), torch.device("cpu"), 10**6)


SLOW, FAST = 3 * INLINE_MAX_CPU_S, 0.0


def test_warm_up_calls_and_interrupted_streaks_do_not_make_a_loss_slow() -> None:
    service = _service()
    for _ in range(SLOW_WARMUP):  # a first call builds the plan and pays torch's warm-up
        assert service._on_loop("mse_loss", _burn, SLOW) == "done"
    for _ in range(3):
        for _ in range(SLOW_IN_A_ROW - 1):
            service._on_loop("mse_loss", _burn, SLOW)
        service._on_loop("mse_loss", _burn, FAST)  # a fast call ends the streak
    assert service.slow_losses == set()


def test_a_loss_slow_in_a_row_after_its_warm_up_goes_to_the_pool_and_others_stay() -> None:
    service = _service()
    for i in range(SLOW_WARMUP + SLOW_IN_A_ROW):
        assert "soft_cldice_loss" not in service.slow_losses, i
        service._on_loop("soft_cldice_loss", _burn, SLOW)
        service._on_loop("mse_loss", _burn, FAST)
    assert service.slow_losses == {"soft_cldice_loss"}
    for _ in range(SLOW_WARMUP + SLOW_IN_A_ROW):  # a name the registry does not know is never kept
        service._on_loop("no_such_loss", _burn, SLOW)
    assert service.slow_losses == {"soft_cldice_loss"}


def test_a_loss_is_judged_once_whichever_of_its_names_the_calls_use() -> None:
    service = _service()
    names = ["soft_cldice_loss", "SoftclDiceLoss", "cldice_loss", "soft_cldice"]
    for i in range(SLOW_WARMUP + SLOW_IN_A_ROW):
        assert not service.slow_losses, i
        service._on_loop(names[i % len(names)], _burn, SLOW)
    assert service.slow_losses == {"soft_cldice_loss"}  # its canonical name: every alias goes to the pool
    t = lambda: lossd_pb2.Tensor(dtype="float32", shape=[1], values=[0.0])  # noqa: E731
    for name in names:
        assert not service._inline(lossd_pb2.EvaluateLossRequest(loss=name, inputs={"input": t(), "target": t()}))
    assert service._inline(lossd_pb2.EvaluateLossRequest(loss="mse", inputs={"input": t(), "target": t()}))
