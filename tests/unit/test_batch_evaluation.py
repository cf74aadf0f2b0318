"""EvaluateLossBatch's evaluation in this process (server/rpc/_batch.py): a vectorized group larger
than one chunk (``GRAIN_ELEMENTS``) answers every item with the bytes EvaluateLoss gives it alone
(but the shared times), each chunk in one torch call. Against a real server:
tests/integration/test_evaluate_batch.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from lossd.client import build_request
from lossd.server.evaluation import evaluate_stacked
from lossd.server.losses import REGISTRY
from lossd.server.rpc import handle_evaluate_bytes
from lossd.server.rpc import _batch
from lossd.server.rpc._batch import GRAIN_ELEMENTS, evaluate_batch
from lossd.v1 import lossd_pb2


def _without_timing(data: bytes) -> lossd_pb2.EvaluateLossResponse:
    reply = lossd_pb2.EvaluateLossResponse.FromString(data)
    reply.ClearField("timing")
    return reply


@pytest.mark.parametrize(("n", "reduction"), [(100, "mean"), (7, "sum"), (GRAIN_ELEMENTS // 4, "none")])
def test_a_group_over_several_chunks_answers_each_item_as_alone(n: int, reduction: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counted(registry: Any, loss: str, stacked: dict[str, torch.Tensor], *args: Any) -> Any:
        calls.append(len(stacked["y_pred"]))
        return evaluate_stacked(registry, loss, stacked, *args)

    monkeypatch.setattr(_batch, "evaluate_stacked", counted)
    rng = np.random.default_rng(n)
    per_chunk = (GRAIN_ELEMENTS - 1) // n
    count = 2 * per_chunk + 3  # three chunks, the last of 3
    items = [build_request("mse_loss", rng.standard_normal(n, dtype=np.float32),
                           rng.standard_normal(n, dtype=np.float32), reduction=reduction)[0] for _ in range(count)]
    items.insert(per_chunk, lossd_pb2.EvaluateLossRequest(loss="no_such_loss"))  # not a member: its own error
    outcomes = evaluate_batch(REGISTRY, items)
    assert len(outcomes) == len(items)
    assert getattr(outcomes[per_chunk], "code", None) == "NOT_FOUND"
    members = [i for i in range(len(items)) if i != per_chunk]
    for i in members:
        assert isinstance(outcomes[i], bytes), (i, outcomes[i])
        assert _without_timing(outcomes[i]) == _without_timing(handle_evaluate_bytes(REGISTRY, items[i])), i
    assert calls == [per_chunk, per_chunk, 3], "one torch call per chunk of under GRAIN_ELEMENTS elements"
    forward = [lossd_pb2.EvaluateLossResponse.FromString(outcomes[i]).timing.forward_ms for i in members]
    chunks = [forward[at:at + per_chunk] for at in range(0, len(forward), per_chunk)]
    assert all(len(set(c)) == 1 for c in chunks), "each chunk's time is shared by its members"


def test_a_batcher_group_is_evaluated_as_evaluate_batch_would_and_one_call_with_the_plans() -> None:
    """``evaluate_group`` (the dynamic batcher's groups, already keyed): the replies of
    ``evaluate_batch``; a group of one is evaluated alone through the service's plans."""
    from lossd.server.rpc._batch import evaluate_group
    from lossd.server.rpc._plan import Plans

    rng = np.random.default_rng(5)
    items = [build_request("mse_loss", rng.standard_normal(10, dtype=np.float32),
                           rng.standard_normal(10, dtype=np.float32), reduction="sum")[0] for _ in range(4)]
    items.append(build_request("mse_loss", [float("nan")] * 10, [0.0] * 10, reduction="sum")[0])  # refused alone
    grouped, batched = evaluate_group(REGISTRY, items), evaluate_batch(REGISTRY, items)
    assert [o if isinstance(o, bytes) else None for o in grouped] != [None] * 5
    for got, want in zip(grouped, batched):
        assert type(got) is type(want)
        if isinstance(want, bytes):
            assert _without_timing(got) == _without_timing(want)
        else:
            assert (got.code, got.field, got.message) == (want.code, want.field, want.message)
    plans = Plans()
    for _ in range(2):
        (alone,) = evaluate_group(REGISTRY, items[:1], plans=plans)
        assert isinstance(alone, bytes)
        assert _without_timing(alone) == _without_timing(handle_evaluate_bytes(REGISTRY, items[0]))
    assert len(plans) == 1
