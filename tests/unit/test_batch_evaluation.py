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


def test_groups_of_other_signatures_one_after_another_each_answer_as_alone() -> None:
    """A reply's framing (its fields' constant prefixes, cached per signature) is that of its own group:
    groups that differ only in row shape, dtype, encoding, gradient names or reduction, evaluated in turn
    (and again, from the cache), answer every item as EvaluateLoss answers it alone."""
    from lossd.server.rpc._batch import evaluate_group

    rng = np.random.default_rng(11)

    def group(shape: tuple[int, ...], dtype: str, encoding: int = 0, **options: Any
              ) -> list[lossd_pb2.EvaluateLossRequest]:
        items = [build_request("mse_loss", rng.standard_normal(shape).astype(dtype),
                               rng.standard_normal(shape).astype(dtype), **options)[0] for _ in range(3)]
        for item in items:
            item.output_encoding = encoding
        return items

    groups = [
        group((6,), "float32"), group((2, 3), "float32"), group((3, 2), "float32"), group((6,), "float64"),
        group((6,), "float32", lossd_pb2.TENSOR_ENCODING_VALUES), group((6,), "float32", reduction="none"),
        group((6,), "float16", reduction="sum"), group((6,), "float32", grad_inputs=["y_pred"]),
    ]
    renamed = [lossd_pb2.EvaluateLossRequest() for _ in range(3)]  # the same tensors under torch's own names
    for message, source in zip(renamed, groups[0]):
        message.CopyFrom(source)
        message.inputs["input"].CopyFrom(source.inputs["y_pred"])
        message.inputs["target"].CopyFrom(source.inputs["y_true"])
        del message.inputs["y_pred"], message.inputs["y_true"]
    groups.append(renamed)
    for _ in range(2):
        for items in groups:
            for item, outcome in zip(items, evaluate_group(REGISTRY, items)):
                assert isinstance(outcome, bytes), outcome
                assert _without_timing(outcome) == _without_timing(handle_evaluate_bytes(REGISTRY, item))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_a_group_holding_a_non_finite_value_answers_that_item_with_its_refusal(dtype: str) -> None:
    from lossd.server.rpc._batch import evaluate_group

    t = lambda *v: lossd_pb2.Tensor(dtype=dtype, shape=[len(v)], values=v)  # noqa: E731
    items = [lossd_pb2.EvaluateLossRequest(loss="mse", inputs={"y_pred": t(x, 1.0), "y_true": t(0.0, 0.0)})
             for x in (1.0, float("inf"), 2.0)]
    for item in items:  # raw payloads, as the SDK sends them: the group is stacked from them
        for tensor in item.inputs.values():
            tensor.raw = torch.tensor(list(tensor.values), dtype=getattr(torch, dtype)).view(torch.uint8).numpy().tobytes()
            del tensor.values[:]
    outcomes = evaluate_group(REGISTRY, items)
    assert isinstance(outcomes[0], bytes) and isinstance(outcomes[2], bytes)
    assert getattr(outcomes[1], "field", None) == "inputs.y_pred" and "Inf" in outcomes[1].message
    assert _without_timing(outcomes[2]) == _without_timing(handle_evaluate_bytes(REGISTRY, items[2]))
