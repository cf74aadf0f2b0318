"""EvaluateLossBatch's evaluation in this process (server/rpc/_batch.py): a vectorized group larger
than one chunk (``GRAIN_ELEMENTS``) answers every item with the bytes EvaluateLoss gives it alone
(but the shared times), each chunk in one torch call. Against a real server:
tests/integration/test_evaluate_batch.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from google.protobuf import struct_pb2

from lossd.client import build_request
from lossd.server.losses import REGISTRY
from lossd.server.rpc import _batch, handle_evaluate_bytes
from lossd.server.rpc._batch import GRAIN_ELEMENTS, evaluate_batch, evaluate_group, group_key
from lossd.server.rpc._plan import Plans
from lossd.v1 import lossd_pb2


def _without_timing(data: bytes) -> lossd_pb2.EvaluateLossResponse:
    reply = lossd_pb2.EvaluateLossResponse.FromString(data)
    reply.ClearField("timing")
    return reply


@pytest.mark.parametrize(("n", "reduction"), [(100, "mean"), (7, "sum"), (GRAIN_ELEMENTS // 4, "none")])
def test_a_group_over_several_chunks_answers_each_item_as_alone(n: int, reduction: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    run = _batch._stacked

    def counted(plan: Any, stacked: dict[str, torch.Tensor], *args: Any) -> Any:
        calls.append(len(stacked["y_pred"]))
        return run(plan, stacked, *args)

    monkeypatch.setattr(_batch, "_stacked", counted)
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
    group_plans: Plans[Any] = Plans()  # and each signature's group plan, kept by the first group, used by the next
    for _ in range(2):
        for items in groups:
            for plans in (None, group_plans):
                outcomes = evaluate_group(REGISTRY, items, group_plans=plans, key=group_key(REGISTRY, items[0]))
                for item, outcome in zip(items, outcomes):
                    assert isinstance(outcome, bytes), outcome
                    assert _without_timing(outcome) == _without_timing(handle_evaluate_bytes(REGISTRY, item))
    assert len(group_plans) == len({group_key(REGISTRY, items[0]) for items in groups})  # the encoding is no part


def test_a_kept_group_plan_serves_the_next_groups_of_its_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wire rules and the binding run for a signature's first group only; later groups of any size and
    values answer as they would alone. A signature that cannot be vectorized keeps that verdict (each member
    alone, with its refusal); one whose members all fail the wire rules keeps no plan."""
    checked: list[int] = []
    check = _batch.check_tensors
    monkeypatch.setattr(_batch, "check_tensors", lambda *a: checked.append(1) or check(*a))
    group_plans: Plans[Any] = Plans()
    rng = np.random.default_rng(3)
    for size in (3, 5, 2):
        items = _raw_items("float32", [tuple(rng.standard_normal(2)) for _ in range(size)],
                           params=struct_pb2.Struct(fields={"reduction": struct_pb2.Value(string_value="sum")}))
        outcomes = evaluate_group(REGISTRY, items, group_plans=group_plans, key=group_key(REGISTRY, items[0]))
        for item, outcome in zip(items, outcomes, strict=True):
            assert isinstance(outcome, bytes), outcome
            assert _without_timing(outcome) == _without_timing(handle_evaluate_bytes(REGISTRY, item))
    assert len(checked) == 1 and len(group_plans) == 1
    bogus = _raw_items("float32", [(1.0, 2.0)] * 3, params=struct_pb2.Struct(fields={"reduction": struct_pb2.Value(string_value="bogus")}))
    key = group_key(REGISTRY, bogus[0])
    for _ in range(2):
        outcomes = evaluate_group(REGISTRY, bogus, group_plans=group_plans, key=key)
        assert [getattr(o, "field", None) for o in outcomes] == ["params.reduction"] * 3, outcomes
    kept = group_plans.get(key)
    assert kept is not None and kept.stacked is None
    assert all(layout.raw == b"" for layout in kept.layouts)  # a kept plan holds no client's tensor bytes
    short = _raw_items("float32", [(1.0, 2.0)] * 2)
    for item in short:
        item.inputs["y_pred"].raw = item.inputs["y_pred"].raw[:4]  # 4 bytes for 2 float32: every member refused
    outcomes = evaluate_group(REGISTRY, short, group_plans=group_plans, key=group_key(REGISTRY, short[0]))
    assert [getattr(o, "field", None) for o in outcomes] == ["inputs.y_pred.raw"] * 2, outcomes
    assert group_plans.get(group_key(REGISTRY, short[0])) is None


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


def _raw_items(dtype: str, rows: list[tuple[float, ...]], target: tuple[float, ...] = (0.5, -0.5),
               **fields: Any) -> list[lossd_pb2.EvaluateLossRequest]:
    """mse items (``y_pred`` a row, ``y_true`` the target), their payloads raw, as the SDK sends them: a group
    is stacked from them."""
    def tensor(*v: float) -> lossd_pb2.Tensor:
        raw = torch.tensor(v, dtype=getattr(torch, dtype)).view(torch.uint8).numpy().tobytes()
        return lossd_pb2.Tensor(dtype=dtype, shape=[len(v)], raw=raw)
    return [lossd_pb2.EvaluateLossRequest(loss="mse", inputs={"y_pred": tensor(*row), "y_true": tensor(*target)},
                                          **fields) for row in rows]


def test_one_items_refused_encoding_or_params_leave_the_others_of_its_group_answered() -> None:
    """A member's output_encoding (not in the group key) is its own refusal, and params every member shares
    but the server refuses (a NaN) are each member's: nothing fails the whole batch or window group, which
    before answered every caller with the one item's error."""
    from lossd.server.rpc._batch import evaluate_group

    items = _raw_items("float32", [(1.0, 2.0), (3.0, 4.0), (5.0, 6.0)])
    items[1].output_encoding = 99  # type: ignore[assignment]
    for outcomes in (evaluate_batch(REGISTRY, items), evaluate_group(REGISTRY, items)):
        assert getattr(outcomes[1], "field", None) == "output_encoding", outcomes[1]
        for i in (0, 2):
            assert _without_timing(outcomes[i]) == _without_timing(handle_evaluate_bytes(REGISTRY, items[i]))
    nan_params = _raw_items("float32", [(1.0, 2.0), (3.0, 4.0)])
    for item in nan_params:
        item.params.update({"reduction": "sum"})
        item.params.fields["reduction"].number_value = float("nan")
    for outcomes in (evaluate_batch(REGISTRY, nan_params), evaluate_group(REGISTRY, nan_params)):
        assert [getattr(o, "field", None) for o in outcomes] == ["params", "params"], outcomes


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_a_group_with_nan_allowed_answers_each_item_with_the_bits_it_gets_alone(dtype: str) -> None:
    """With allow_non_finite, a non-finite stack is not vectorized: a stacked mean gave float16's NaN as
    7e00 and bfloat16's as ffff where the loss alone (and local torch) gives 7fff and 7fc0."""
    row = (float("nan"), 1.0, 2.0, 3.0)
    items = _raw_items(dtype, [row, (1.0, 2.0, 3.0, 4.0)], target=(0.0,) * 4, allow_non_finite=True)
    outcomes = evaluate_batch(REGISTRY, items)
    for i, item in enumerate(items):
        assert _without_timing(outcomes[i]) == _without_timing(handle_evaluate_bytes(REGISTRY, item)), i
    x = torch.tensor(row, dtype=getattr(torch, dtype))
    local = torch.nn.functional.mse_loss(x, torch.zeros_like(x)).reshape(1).view(torch.uint8).numpy().tobytes()
    assert lossd_pb2.EvaluateLossResponse.FromString(outcomes[0]).loss.raw == local


def test_a_shape_its_data_cannot_fill_is_its_items_refusal_not_the_batchs() -> None:
    """The batch's bytes limit counts what the tensors' data can fill once their shapes put it over: an item
    declaring 40,000,000 float32 over 8 bytes is refused alone (INVALID_ARGUMENT), and a group whose first
    member is such an item is still stacked for the others."""
    from lossd.server._limits import BatchLimits
    from lossd.server.rpc._batch import check_batch

    liar = _raw_items("float32", [(1.0, 2.0)])[0]
    liar.inputs["y_pred"].shape[:] = [40_000_000]
    liar.inputs["y_true"].shape[:] = [40_000_000]
    good = _raw_items("float32", [(1.0, 2.0), (3.0, 4.0)])
    limits = BatchLimits(max_bytes=1 << 20)
    outcomes = evaluate_batch(REGISTRY, [good[0], liar, good[1]], batch_limits=limits)
    assert getattr(outcomes[1], "code", None) == "INVALID_ARGUMENT" and "raw" in outcomes[1].field, outcomes[1]
    assert all(isinstance(outcomes[i], bytes) for i in (0, 2))
    honest = _raw_items("float32", [(1.0, 2.0)] * 2)
    honest[0].inputs["y_pred"].shape[:] = [300_000]  # its data says 2 elements: refused alone
    honest[1].inputs["y_pred"].raw = bytes(1_200_000)
    honest[1].inputs["y_pred"].shape[:] = [300_000]
    honest[1].inputs["y_true"].raw = bytes(1_200_000)
    honest[1].inputs["y_true"].shape[:] = [300_000]
    with pytest.raises(Exception, match="the batch carries over 1048576 bytes"):  # 2.4 MB held: still over
        check_batch(honest, limits, [_batch.payload_bytes(i) for i in honest])


def test_a_group_whose_first_member_has_short_data_is_still_stacked(monkeypatch: pytest.MonkeyPatch) -> None:
    stacked: list[int] = []

    run = _batch._stacked

    def counted(plan: Any, tensors: dict[str, torch.Tensor], *args: Any) -> Any:
        stacked.append(len(tensors["y_pred"]))
        return run(plan, tensors, *args)

    monkeypatch.setattr(_batch, "_stacked", counted)
    items = _raw_items("float32", [(1.0, 2.0), (3.0, 4.0), (5.0, 6.0)])
    items[0].inputs["y_pred"].raw = items[0].inputs["y_pred"].raw[:4]  # 4 bytes for 2 float32
    outcomes = evaluate_batch(REGISTRY, items)
    assert getattr(outcomes[0], "field", None) == "inputs.y_pred.raw", outcomes[0]
    assert stacked == [2]  # the other two, in one call
    for i in (1, 2):
        assert _without_timing(outcomes[i]) == _without_timing(handle_evaluate_bytes(REGISTRY, items[i]))
