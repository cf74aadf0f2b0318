"""EvaluateLossBatch and the dynamic batcher against a real server on an ephemeral port.

- a batch of mixed losses answers every item in order, each exactly as EvaluateLoss answers
  it alone (vectorized groups included, compared with local torch bit for bit), a bad item
  with its own error;
- the batch limits refuse RESOURCE_EXHAUSTED naming the flag, and the server goes on;
- ``evaluate_many`` (sync and async) packs items into several batches, errors in place;
- a batch past its deadline, or cancelled, stops between items;
- ``--batch-window-us``: concurrent compatible calls are evaluated together, each answered
  (and refused) as alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossd.client import AsyncClient, Client, NotFound, build_request
from lossd.client import _client as sdk
from lossd.v1 import lossd_pb2, lossd_pb2_grpc
from support.servers import on_this_loop, scratch_dir, serve_in_thread
from support.procstat import wait_for
from support.slow_eval import BIG_REPLIES, calibrated_ctc, ctc_request


@contextlib.contextmanager
def lossd(**settings: Any) -> Iterator[tuple[str, Any]]:
    """A server in this process with ``settings``, and its :class:`lossd.server.LossdServer`."""
    from lossd.server import ServerConfig, create_server

    made: dict[str, Any] = {}

    async def build() -> Any:
        config = ServerConfig(host="127.0.0.1", port=0, device="cpu", plugins="none",
                              data_dir=data_dir, **settings)
        made["server"] = await create_server(config)
        return made["server"]

    with scratch_dir("lossd-batch-") as data_dir, serve_in_thread(build) as port:
        yield f"127.0.0.1:{port}", made["server"]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Any]]:
    with lossd(workers=2, max_batch_items=64, max_batch_bytes=1 << 20) as s:
        yield s


@pytest.fixture(scope="module")
def stub(served: tuple[str, Any]) -> Iterator[lossd_pb2_grpc.LossServiceStub]:
    with grpc.insecure_channel(served[0], options=BIG_REPLIES) as channel:
        yield lossd_pb2_grpc.LossServiceStub(channel)


RNG = np.random.default_rng(7)


def _f32(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 10.0 ** RNG.integers(-3, 4, shape)).astype(np.float32)


def _mixed_items() -> list[lossd_pb2.EvaluateLossRequest]:
    """Vectorized groups, losses evaluated alone, and items refused for their own reasons."""
    items = [build_request("mse", _f32(100), _f32(100))[0] for _ in range(6)]  # one group of 6
    items += [build_request("l1_loss", _f32(3, 4), _f32(3, 4), grad_inputs=["y_pred"], reduction="sum")[0]
              for _ in range(3)]  # another group
    items.append(build_request("ce", _f32(4, 5), np.array([0, 4, 2, 1]))[0])  # not vectorized
    items.append(build_request("mse", _f32(100), _f32(100), encoding="values")[0])  # values: alone
    bad_raw = build_request("mse", _f32(100), _f32(100))[0]
    bad_raw.inputs["y_true"].raw = bad_raw.inputs["y_true"].raw[:-4]  # wrong length, inside the mse group's key
    items.append(bad_raw)
    nan = [build_request("mse", _f32(5), _f32(5))[0] for _ in range(3)]
    nan[1].inputs["y_pred"].raw = np.array([0, np.nan, 0, 0, 0], np.float32).tobytes()
    items += nan  # a group with a NaN: each alone, only the NaN one refused
    items.append(lossd_pb2.EvaluateLossRequest(loss="no_such_loss"))
    items.append(build_request([{"loss": "mse", "weight": 0.5}, {"loss": "l1"}], _f32(8), _f32(8))[0])
    items.append(build_request("mse", _f32(6), _f32(6), grad_output=np.ones(6, np.float32), reduction="none")[0])
    items += [build_request("mse", _f32(100), _f32(100))[0] for _ in range(2)]  # more of the first group
    items.append(build_request("mse", _f32(4), _f32(1))[0])  # computed with torch's broadcasting warning
    items.append(build_request("kl_div", _f32(3), np.abs(_f32(3)), reduction="mean")[0])  # torch's own warning
    return items


def _without_timing(reply: lossd_pb2.EvaluateLossResponse) -> lossd_pb2.EvaluateLossResponse:
    copy = lossd_pb2.EvaluateLossResponse()
    copy.CopyFrom(reply)
    copy.ClearField("timing")
    return copy


def test_a_mixed_batch_answers_each_item_as_evaluate_loss_does(
        served: tuple[str, Any], stub: lossd_pb2_grpc.LossServiceStub) -> None:
    items = _mixed_items()
    reply = stub.EvaluateLossBatch(lossd_pb2.EvaluateLossBatchRequest(items=items), timeout=60)
    assert len(reply.results) == len(items)
    codes = []
    for i, (item, result) in enumerate(zip(items, reply.results)):
        try:
            alone = stub.EvaluateLoss(item, timeout=60)
        except grpc.RpcError as e:
            assert result.HasField("error"), (i, e.details())
            assert (result.error.code, result.error.message) == (e.code().name, e.details()), i
            codes.append(result.error.code)
            continue
        assert result.HasField("response"), (i, result.error)
        assert _without_timing(result.response) == _without_timing(alone), i
        codes.append("OK")
    assert codes == ["OK"] * 11 + ["INVALID_ARGUMENT", "OK", "INVALID_ARGUMENT", "OK", "NOT_FOUND", "OK", "OK",
                                   "OK", "OK", "OK", "OK"]
    # Each item carries its own warnings, and only its own.
    warned = {i: list(r.response.warnings) for i, r in enumerate(reply.results) if r.response.warnings}
    assert sorted(warned) == [20, 21], warned
    assert "target size" in warned[20][0] and "reduction: 'mean'" in warned[21][0], warned
    assert reply.results[11].error.field == "inputs.y_true.raw"
    assert reply.results[13].error.field == "inputs.y_pred"
    # The two groups were vectorized: one torch call each, whose time the members share equally.
    for group in ((0, 1, 2, 3, 4, 5, 18, 19), (6, 7, 8)):
        forward = {reply.results[i].response.timing.forward_ms for i in group}
        assert len(forward) == 1, (group, forward)
    assert reply.results[9].response.timing.forward_ms not in forward


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_a_vectorized_group_equals_local_torch_bit_for_bit(stub: lossd_pb2_grpc.LossServiceStub, dtype: str,
                                                           reduction: str) -> None:
    pairs = [(_f32(4, 25).astype(dtype), _f32(4, 25).astype(dtype)) for _ in range(20)]
    items = [build_request("mse_loss", p, t, reduction=reduction)[0] for p, t in pairs]
    reply = stub.EvaluateLossBatch(lossd_pb2.EvaluateLossBatchRequest(items=items), timeout=60)
    for (p, t), result in zip(pairs, reply.results):
        x, y = torch.from_numpy(p).requires_grad_(), torch.from_numpy(t).requires_grad_()
        loss = F.mse_loss(x, y, reduction=reduction)
        gx, gy = torch.autograd.grad(loss, [x, y], torch.ones_like(loss))
        r = result.response
        assert np.frombuffer(r.loss.raw, dtype).tobytes() == loss.detach().numpy().tobytes()
        assert r.grads["y_pred"].raw == gx.numpy().tobytes() and r.grads["y_true"].raw == gy.numpy().tobytes()
        if reduction != "none":
            assert r.value == loss.item()


def test_an_items_own_refusal_leaves_the_rest_of_the_batch_answered(stub: lossd_pb2_grpc.LossServiceStub) -> None:
    """In one vectorized group: a member's refused output_encoding, params every member shares that the
    server refuses (a NaN), and a shape its data cannot fill (counted at its data's bytes, not its
    shape's, against --max-batch-bytes) are each that item's refusal, as EvaluateLoss alone gives it;
    before, each failed the whole call (the third as RESOURCE_EXHAUSTED)."""
    items = [build_request("mse_loss", _f32(4, 25), _f32(4, 25))[0] for _ in range(6)]
    items[1].output_encoding = 99  # type: ignore[assignment]
    for i in (3, 4):
        items[i].params.update({"reduction": "sum"})
        items[i].params.fields["reduction"].number_value = math.nan
    liar = build_request("mse_loss", _f32(2), _f32(2))[0]
    for name in ("y_pred", "y_true"):
        liar.inputs[name].shape[:] = [10**6]  # 4 MB by its shape, over the module server's 1 MiB
    items.append(liar)
    reply = stub.EvaluateLossBatch(lossd_pb2.EvaluateLossBatchRequest(items=items), timeout=60)
    outcomes = []
    for i, (item, result) in enumerate(zip(items, reply.results)):
        try:
            alone = stub.EvaluateLoss(item, timeout=60)
        except grpc.RpcError as e:
            assert (result.error.code, result.error.message) == (e.code().name, e.details()), i
            outcomes.append(result.error.field)
            continue
        assert _without_timing(result.response) == _without_timing(alone), i
        outcomes.append("OK")
    assert outcomes == ["OK", "output_encoding", "OK", "params", "params", "OK", "inputs.y_pred.raw"], outcomes


def test_batch_limits_refuse_naming_the_flag_and_the_server_goes_on(stub: lossd_pb2_grpc.LossServiceStub) -> None:
    one = build_request("mse", [1.0], [0.0])[0]
    with pytest.raises(grpc.RpcError) as info:
        stub.EvaluateLossBatch(lossd_pb2.EvaluateLossBatchRequest(items=[one] * 65), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "65 items" in info.value.details() and "--max-batch-items" in info.value.details()
    big = build_request("mse", np.zeros(70_000, np.float32), np.zeros(70_000, np.float32))[0]  # 560 KB each
    with pytest.raises(grpc.RpcError) as info:
        stub.EvaluateLossBatch(lossd_pb2.EvaluateLossBatchRequest(items=[big, big]), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-batch-bytes" in info.value.details(), info.value.details()
    ok = stub.EvaluateLossBatch(lossd_pb2.EvaluateLossBatchRequest(items=[one] * 64), timeout=30)
    assert [r.response.value for r in ok.results] == [1.0] * 64


def _many_items(n: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"loss": "mse", "y_pred": _f32(10), "y_true": _f32(10)} for _ in range(n)]
    items[5] = {"loss": "mse", "y_pred": _f32(10), "y_true": _f32(3)}  # refused: shapes differ
    items[17] = {"loss": "huber", "y_pred": _f32(4), "y_true": _f32(4), "delta": 0.5}
    items[23] = {"loss": "nope", "y_pred": _f32(2), "y_true": _f32(2)}
    return items


def _check_many(client: Client, items: list[dict[str, Any]], out: list[Any]) -> None:
    assert len(out) == len(items)
    for i, (item, got) in enumerate(zip(items, out)):
        if i in (5, 23):
            assert got.item == i and got.code == (grpc.StatusCode.INVALID_ARGUMENT if i == 5 else grpc.StatusCode.NOT_FOUND)
            continue
        alone = client.evaluate(**item)
        assert got.value == alone.value and got.loss_name == alone.loss_name, i
        assert all(np.array_equal(got.grads[k], alone.grads[k]) for k in alone.grads), i


def test_evaluate_many_packs_batches_and_keeps_errors_in_place(
        served: tuple[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk, "MANY_BATCH_ITEMS", 7)  # 30 items: five batches, two in flight
    items = _many_items(30)
    with Client(served[0]) as client:
        _check_many(client, items, client.evaluate_many(items))
        with pytest.raises(Exception) as info:
            client.evaluate_many(items, raise_on_error=True)
        assert getattr(info.value, "item", None) == 5

        async def run() -> list[Any]:
            async with AsyncClient(served[0]) as ac:
                return await ac.evaluate_many(items)

        _check_many(client, items, asyncio.run(run()))


def test_evaluate_many_streams_the_items_a_server_refuses_to_batch(served: tuple[str, Any]) -> None:
    """A server whose --max-batch-items (here 64) is below what the SDK packs refuses the batch, naming the flag;
    evaluate_many failed with it, and its advice, "send fewer per batch", was nothing the SDK lets a caller do.
    It now sends the items over EvaluateLossStream, as to a server without EvaluateLossBatch (an audit,
    2026-12-06): the same outcomes, sync and async, an item's own error in its place."""
    items: list[Any] = [{"loss": "mse", "y_pred": [float(i)], "y_true": [0.0]} for i in range(100)]
    items[7] = {"loss": "no_such_loss", "y_pred": [1.0], "y_true": [0.0]}
    with grpc.insecure_channel(served[0]) as channel:  # the refusal itself, as the SDK meets it
        with pytest.raises(grpc.RpcError) as refused:
            lossd_pb2_grpc.LossServiceStub(channel).EvaluateLossBatch(lossd_pb2.EvaluateLossBatchRequest(
                items=[build_request(i["loss"], i["y_pred"], i["y_true"])[0] for i in items[8:]]), timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-batch-items" in refused.value.details() and "then streams them" in refused.value.details()

    def check(outcomes: list[Any]) -> None:
        assert len(outcomes) == 100
        assert isinstance(outcomes[7], NotFound) and outcomes[7].item == 7, outcomes[7]
        assert [o.value for i, o in enumerate(outcomes) if i != 7] == [float(i * i) for i in range(100) if i != 7]

    with Client(served[0]) as client:
        check(client.evaluate_many(items))

    async def run() -> list[Any]:
        async with AsyncClient(served[0]) as ac:
            return await ac.evaluate_many(items)

    check(asyncio.run(run()))


def _settled(read: Any, quiet_s: float = 1.0, limit_s: float = 60.0) -> int:
    """``read()`` once it has stopped changing for ``quiet_s`` seconds."""
    last, ends = read(), time.monotonic() + limit_s
    while time.monotonic() < ends:
        time.sleep(quiet_s)
        now = read()
        if now == last:
            return int(now)
        last = now
    raise AssertionError(f"still changing after {limit_s} s: {last}")


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_a_batch_that_ends_early_stops_between_items(how: str) -> None:
    """At least 60 items of about 0.125 s each (not vectorized: one at a time), enough for twice the
    3 s deadline; the call ends after a few seconds (its deadline, or the client cancels it once two
    items are done), and the batch stops at the next item instead of running to the end.

    The items' size is bounded (``max_batch``, at most 100 MiB in all), so that the batch stays within
    ``--max-batch-bytes`` (128 MiB) however fast the machine is: calibrated to 0.25 s, a fast moment
    once made 60 items of 148 MiB, refused RESOURCE_EXHAUSTED instead of running into the deadline."""
    with lossd(workers=1) as (address, server), grpc.insecure_channel(address, options=BIG_REPLIES) as channel:
        stub = lossd_pb2_grpc.LossServiceStub(channel)
        batch, took = calibrated_ctc(stub, 0.125, max_batch=10)
        item = ctc_request(batch)
        count = min(max(60, math.ceil(6.0 / max(took, 1e-3))), (100 << 20) // item.ByteSize())
        items = [item] * count
        request = lossd_pb2.EvaluateLossBatchRequest(items=items)
        if how == "deadline":
            with pytest.raises(grpc.RpcError) as info:
                stub.EvaluateLossBatch(request, timeout=3.0)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        else:
            call = stub.EvaluateLossBatch.future(request, timeout=120)
            assert wait_for(lambda: server.loss_service.last_batch is not None
                            and server.loss_service.last_batch.evaluated >= 2, 60)
            call.cancel()
            with pytest.raises(grpc.FutureCancelledError):
                call.result()
        control = server.loss_service.last_batch
        assert control is not None, "the batch never started"
        done = _settled(lambda: control.evaluated)
        assert control.cancelled.is_set()
        assert done < len(items) - 10, done  # stopped, not run to the end
        # The thread is free again: a new batch is answered.
        small = lossd_pb2.EvaluateLossBatchRequest(items=[build_request("mse", [2.0], [0.0])[0]])
        assert stub.EvaluateLossBatch(small, timeout=60).results[0].response.value == 4.0


def test_the_batch_window_evaluates_concurrent_calls_together_each_as_alone() -> None:
    """Eight clients calling at once, round after round, with a 0.2 s window: calls that find another
    in flight wait and are evaluated in groups (until one has formed, at most 50 rounds), every
    reply bit-identical to local torch, and the one bad call of each round refused alone."""
    rounds, pairs = 50, [(_f32(100), _f32(100)) for _ in range(8)]
    pairs[3] = (np.full(100, np.nan, np.float32), pairs[3][1])
    with lossd(batch_window_us=200_000) as (address, server):
        batcher = server.loss_service.batcher
        outcomes: list[list[Any]] = [[] for _ in pairs]
        grouped, before = [False], [-1]  # read by every thread at the start of a round, set once per round

        def round_starts() -> None:  # the rounds' calls, not the connecting ones, must form a group
            before[0] = batcher.batched_calls if before[0] < 0 else before[0]
            grouped[0] = batcher.batched_calls > before[0]

        barrier = threading.Barrier(len(pairs), action=round_starts)

        def call(i: int) -> None:
            with Client(address) as c:
                c.evaluate("mse", [0.0], [0.0])  # connected before the barrier
                for _ in range(rounds):
                    barrier.wait()
                    if grouped[0] and outcomes[i]:
                        return
                    try:
                        outcomes[i].append(c.evaluate("mse_loss", *pairs[i]))
                    except Exception as e:  # noqa: BLE001 - the outcome under test
                        outcomes[i].append(e)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(pairs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert batcher.batched_calls > before[0] >= 0, (batcher.batched_calls, before)
    for i, ((p, t), got) in enumerate(zip(pairs, outcomes)):
        assert got, i
        if i == 3:
            assert all(type(g).__name__ == "InvalidArgument" and "inputs.y_pred" in str(g) for g in got), got
            continue
        x, y = torch.from_numpy(p).requires_grad_(), torch.from_numpy(t).requires_grad_()
        loss = F.mse_loss(x, y)
        gx, gy = torch.autograd.grad(loss, [x, y])
        for g in got:
            assert g.value == loss.item(), i
            assert g.grads["y_pred"].tobytes() == gx.numpy().tobytes()
            assert g.grads["y_true"].tobytes() == gy.numpy().tobytes()


def test_a_call_with_nobody_to_wait_for_is_evaluated_at_once() -> None:
    """One client calling back to back, with a window longer than the whole run: no call finds
    another in flight, so none waits for company (the batcher counts each as alone and forms no
    group), and each reply is torch's."""
    with lossd(batch_window_us=10_000_000) as (address, server), Client(address) as c:
        start = time.monotonic()
        for x in range(1, 21):
            assert c.evaluate("mse_loss", [float(x)], [0.0]).value == x * x
        assert time.monotonic() - start < 10
        batcher = server.loss_service.batcher
        assert (batcher.alone, batcher.groups) == (20, 0), (batcher.alone, batcher.groups)


def test_evaluate_many_falls_back_to_the_stream_on_a_server_without_evaluate_loss_batch() -> None:
    """A server from before EvaluateLossBatch (its servicer answers UNIMPLEMENTED, as the generated
    base class does): evaluate_many sends the same items over EvaluateLossStream, same outcomes."""
    from concurrent.futures import ThreadPoolExecutor

    from lossd.server.losses import REGISTRY
    from lossd.server.rpc import LossService

    class Older(LossService):
        EvaluateLossBatch = lossd_pb2_grpc.LossServiceServicer.EvaluateLossBatch  # type: ignore[assignment]

    class Bare:
        async def start(self) -> None:
            await self.server.start()

        async def close(self) -> None:
            await self.server.stop(None)

    async def build() -> Bare:
        bare = Bare()
        bare.server = grpc.aio.server()  # type: ignore[attr-defined]
        lossd_pb2_grpc.add_LossServiceServicer_to_server(
            Older(REGISTRY, ThreadPoolExecutor(1), torch.device("cpu"), 10**6), bare.server)  # type: ignore[attr-defined]
        bare.port = bare.server.add_insecure_port("127.0.0.1:0")  # type: ignore[attr-defined]
        return bare

    items = _many_items(30)
    with serve_in_thread(build) as port, Client(f"127.0.0.1:{port}") as client:
        with pytest.raises(Exception) as info:
            client.channel.unary_unary("/lossd.v1.LossService/EvaluateLossBatch")(b"", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
        _check_many(client, items, client.evaluate_many(items))


def test_a_batch_is_evaluated_and_its_reply_framed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The framing of a batch's reply (7 ms for an 8 MiB batch's replies) runs on the thread pool with
    its evaluation, not on the event loop. Checked on a real server sharing the test's loop."""
    from lossd.server.rpc import _service

    threads: list[bool] = []  # on the loop's thread
    real = _service.batch_reply

    def recording(outcomes):  # type: ignore[no-untyped-def]
        threads.append(threading.get_ident() == loop_thread)
        return real(outcomes)

    monkeypatch.setattr(_service, "batch_reply", recording)
    loop_thread = threading.get_ident()
    x = np.arange(100, dtype=np.float32)

    async def calls(client: AsyncClient) -> list[Any]:
        return await client.evaluate_many([{"loss": "mse_loss", "y_pred": x + i, "y_true": x} for i in range(50)])

    results = on_this_loop(calls)
    assert [r.value for r in results] == [F.mse_loss(torch.from_numpy(x + i), torch.from_numpy(x)).item()
                                          for i in range(50)]
    assert threads == [False], threads


@pytest.mark.parametrize("vectorized", [True, False], ids=["one-group", "each-alone"])
def test_a_batch_whose_replies_outgrow_the_message_limit_stops_when_they_do(vectorized: bool) -> None:
    """Small items with large replies (``reduction="none"`` over broadcast shapes: 4 KB in, 1 MB out):
    every reply was computed and held before the batch was refused (300 items: 639 MB held at the
    default limit). The batch now stops once its replies pass the limit: here after 8 of 150 (one
    vectorized chunk of them computed at most)."""
    from lossd._wire import FieldError
    from lossd.server.losses import REGISTRY
    from lossd.server.rpc._batch import BatchControl, evaluate_batch

    x, y = _f32(512, 1), _f32(1, 512)
    grad_output = None if vectorized else np.ones((512, 512), np.float32)  # an item with one is evaluated alone
    items = [build_request("mse_loss", x, y, reduction="none", grad_output=grad_output)[0]
             for _ in range(150 if vectorized else 12)]
    control = BatchControl()
    with pytest.raises(FieldError, match=r"over the message limit of 8388608 bytes after 8 items .* send fewer items"):
        evaluate_batch(REGISTRY, items, limits=10**7, control=control, max_reply_bytes=8 << 20)
    assert control.evaluated == 8
    fits = evaluate_batch(REGISTRY, items[:7], limits=10**7, max_reply_bytes=8 << 20)
    assert all(isinstance(o, bytes) for o in fits) and len(fits) == 7


def test_a_batch_reply_exactly_at_the_message_limit_is_sent() -> None:
    """The running total counts each item's framing exactly (replies and errors): a batch whose reply is the
    limit's size fits, one byte less refuses it (the first version counted 12 bytes an item, and refused
    replies gRPC could send)."""
    from lossd._wire import FieldError
    from lossd.server.losses import REGISTRY
    from lossd.server.rpc._batch import BatchControl, batch_reply, evaluate_batch

    items = [build_request("huber_loss", _f32(3), _f32(3))[0] for _ in range(50)]
    items[7] = build_request("nope", _f32(1), _f32(1))[0]  # an error among the replies
    control = BatchControl()
    size = len(batch_reply(evaluate_batch(REGISTRY, items, control=control, max_reply_bytes=1 << 30)))
    assert control.reply_bytes == size
    assert len(batch_reply(evaluate_batch(REGISTRY, items, max_reply_bytes=size))) == size
    with pytest.raises(FieldError, match=f"over the message limit of {size - 1} bytes after 50 items"):
        evaluate_batch(REGISTRY, items, max_reply_bytes=size - 1)


def test_evaluate_many_streams_the_rest_when_a_later_batch_is_refused(served: tuple[str, Any],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches are cut by bytes too: a large first item goes alone, and the next batch of small ones passes
    --max-batch-items (64 here). Only a refused first batch was streamed: this one failed the call, while the
    refusal said the SDK streams them (the review of 2026-12-06). The items answered keep their outcomes, the
    rest go over the stream, each error with its own index."""
    monkeypatch.setattr(sdk, "MANY_BATCH_BYTES", 64 * 1024)
    big = np.linspace(-1, 1, 10_000, dtype=np.float32)  # 80 KB of tensors: a batch of its own
    items: list[Any] = [{"loss": "mse", "y_pred": big, "y_true": big * 0}]
    items += [{"loss": "mse", "y_pred": [float(i)], "y_true": [0.0]} for i in range(1, 101)]
    items[50] = {"loss": "no_such_loss", "y_pred": [1.0], "y_true": [0.0]}
    expected = float(np.mean(big.astype(np.float64) ** 2).astype(np.float32))

    def check(outcomes: list[Any]) -> None:
        assert len(outcomes) == 101
        assert outcomes[0].value == pytest.approx(expected, rel=1e-6)
        assert isinstance(outcomes[50], NotFound) and outcomes[50].item == 50, outcomes[50]
        assert [o.value for i, o in enumerate(outcomes) if i not in (0, 50)] == \
            [float(i * i) for i in range(1, 101) if i != 50]

    with Client(served[0]) as client:
        check(client.evaluate_many(items))
        with pytest.raises(NotFound) as first_error:  # raise_on_error: the item's own error, as ever
            client.evaluate_many(items, raise_on_error=True)
        assert first_error.value.item == 50

    async def run() -> list[Any]:
        async with AsyncClient(served[0]) as ac:
            return await ac.evaluate_many(items)

    check(asyncio.run(run()))


def test_evaluate_many_fits_its_batches_to_a_message_limit_below_them() -> None:
    """``evaluate_many`` packed 8 MiB batches whatever the limits: a server's --max-message-bytes of 4 MiB
    (gRPC's own default) refused the first batch ("Received message larger than max") and the whole call
    failed, telling the user to raise a limit no item came near (the SDK audit, 2026-12-06). A server's
    lower limit now sends the items over the stream, one message each; the client's own limit halves its
    batches."""
    x = np.arange(256, dtype=np.float32)
    items = [{"loss": "mse", "y_pred": x + i, "y_true": x} for i in range(1500)]  # about 1.5 MB in all
    expected = [float(i * i) for i in range(1500)]
    with lossd(workers=2, max_message_bytes=1 << 20) as (address, _):
        with Client(address) as client:
            assert [r.value for r in client.evaluate_many(items)] == expected

        async def run() -> list[Any]:
            async with AsyncClient(address) as ac:
                return await ac.evaluate_many(items)

        assert [r.value for r in asyncio.run(run())] == expected
    with lossd(workers=2) as (address, _), Client(address, max_message_bytes=1 << 20) as client:
        assert [r.value for r in client.evaluate_many(items)] == expected


def test_evaluate_many_whose_time_ran_out_before_its_stream_is_deadline_exceeded(
        served: tuple[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream after a refused batch was given the time left, 0 once it had run out, which the per-call timeout
    check refused: ValueError "timeout: must be > 0 seconds" for a call made with timeout=1.0 (the review of
    2026-12-06). DeadlineExceeded, as gRPC says of a call out of time."""
    import types

    from lossd.client import DeadlineExceeded

    jump = {"s": 0.0}
    monkeypatch.setattr(sdk, "time", types.SimpleNamespace(monotonic=lambda: time.monotonic() + jump["s"]))
    refused = sdk.streams_instead

    def late(error: Any, answered: Any) -> bool:  # the refusal of the first batch took "2 s"
        jump["s"] = 2.0
        return refused(error, answered)

    monkeypatch.setattr(sdk, "streams_instead", late)
    items = [{"loss": "mse", "y_pred": [float(i)], "y_true": [0.0]} for i in range(100)]  # over --max-batch-items
    with Client(served[0]) as client, pytest.raises(DeadlineExceeded):
        client.evaluate_many(items, timeout=1.0)
