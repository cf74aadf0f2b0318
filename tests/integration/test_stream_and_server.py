"""EvaluateLossStream, health, reflection-free listing, concurrency and shutdown."""

from __future__ import annotations

import signal
import threading

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lossd.client import Client, EvaluateResult, InvalidArgument, LossdError, NotFound, build_request
from lossd.server.losses import REGISTRY
from support.servers import on_this_loop


async def _stream(client, requests):  # type: ignore[no-untyped-def]
    return [r async for r in client.evaluate_stream(requests, raise_on_error=False)]


def test_stream_replies_in_order_with_per_item_errors(client):
    requests = []
    expected = []
    for i in range(30):
        x = torch.randn(5, generator=torch.Generator().manual_seed(i))
        requests.append(build_request("mse", x, torch.zeros(5))[0])
        expected.append(torch.nn.functional.mse_loss(x, torch.zeros(5)).item())
    requests[7] = build_request("nope", [1.0], [1.0])[0]
    requests[11] = build_request("mse", [1.0], [1.0], reduction="avg")[0]
    results = list(client.evaluate_stream(requests, raise_on_error=False))
    assert len(results) == 30
    assert isinstance(results[7], NotFound) and results[7].item == 7
    assert isinstance(results[11], InvalidArgument) and results[11].field == "params.reduction"
    for i, r in enumerate(results):
        if i not in (7, 11):
            assert isinstance(r, EvaluateResult) and r.value == expected[i]
    # By default the first failed item raises, as soon as it arrives, and the stream ends.
    seen = []
    with pytest.raises(NotFound) as err:
        for r in client.evaluate_stream(requests):
            seen.append(r.value)
    assert err.value.item == 7 and seen == expected[:7]


def test_list_losses_is_the_registry(client):
    infos = client.list_losses()
    assert [i.name for i in infos] == [s.name for s in REGISTRY]
    ce = next(i for i in infos if i.name == "cross_entropy")
    assert "CrossEntropyLoss" in ce.aliases
    assert [i.name for i in ce.inputs][:2] == ["input", "target"]
    assert ce.inputs[0].differentiable and "y_pred" in ce.inputs[0].aliases
    ls = next(p for p in ce.params if p.name == "label_smoothing")
    assert ls.type == "float" and ls.range == "<= 1" and ls.default.number_value == 0.0
    filtered = client.list_losses("CROSSENTROPY")
    assert "cross_entropy" in [i.name for i in filtered]
    assert all(any("crossentropy" in n.lower() for n in (i.name, *i.aliases)) for i in filtered)
    assert len(filtered) < len(infos)


def test_health_is_serving(server_address):
    with grpc.insecure_channel(server_address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "lossd.v1.LossService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_concurrent_clients_get_their_own_answers(server_address):
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            with Client(server_address) as c:
                for k in range(10):
                    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(seed * 100 + k))
                    t = torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(k))
                    r = c.evaluate("ce", x, t)
                    assert r.value == torch.nn.functional.cross_entropy(x, t).item()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def test_million_element_evaluation(client):
    x = np.random.default_rng(0).standard_normal(10**6).astype(np.float32)
    y = np.zeros(10**6, np.float32)
    r = client.evaluate("mse", x, y)
    expected = torch.nn.functional.mse_loss(torch.from_numpy(x), torch.from_numpy(y))
    assert r.value == expected.item() and r.grads["y_pred"].shape == (10**6,)


def test_unreachable_server_is_unavailable():
    with Client("127.0.0.1:1", timeout=2) as c:
        with pytest.raises(LossdError) as err:
            c.list_losses()
    assert err.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_served_process_stops_cleanly_on_signal(tmp_path, sig):
    from support.servers import ServedProcess

    with ServedProcess.start(tmp_path) as served:
        with Client(served.address) as c:
            assert c.evaluate("mse", [1.0], [0.0]).value == 1.0
        served.proc.send_signal(sig)
        assert served.proc.wait(20) == 0
    assert any("lossd stopped" in line for line in served.log), "".join(served.log)


def test_a_stream_item_is_placed_by_its_received_size_not_by_serializing_it(monkeypatch):
    """Whether an EvaluateLossStream item runs on the event loop is decided from the bytes it came in
    (``Received.size``): a request of small tensors may carry megabytes of ``params``, which
    ``ByteSize`` would serialize on the loop holding the GIL. Checked on a real server sharing the test's
    loop: every item's size reaches the rule, and an item of 100 tensor elements with 220 KB of params
    goes to the thread pool (its reply: the refusal of the unknown param)."""

    from lossd.server.rpc import LossService

    placed: list[tuple[int | None, bool]] = []
    inline = LossService._inline

    def recording(self, message, size=None):  # type: ignore[no-untyped-def]
        placed.append((size, inline(self, message, size)))
        return placed[-1][1]

    monkeypatch.setattr(LossService, "_inline", recording)
    x = np.arange(100, dtype=np.float32)
    small = build_request("mse_loss", x, x + 1)[0]
    padded = build_request("mse_loss", x, x + 1)[0]
    padded.params.update({"pad": [0.5] * 20_000})

    results = on_this_loop(lambda client: _stream(client, [small, padded, small]))
    assert [r.value for r in results if isinstance(r, EvaluateResult)] == [1.0, 1.0]
    assert isinstance(results[1], InvalidArgument) and results[1].field.startswith("params"), results[1]
    assert [inline for _, inline in placed] == [True, False, True], placed
    assert all(size is not None and size >= small.ByteSize() for size, _ in placed), placed
    assert placed[1][0] > padded.ByteSize() - 100, placed


def test_a_small_request_that_is_long_to_walk_is_checked_and_evaluated_off_the_event_loop(monkeypatch):
    """A request of at most 64 KiB is parsed on the event loop and its caps checked there, in at most
    ``LOOP_CHECK_STEPS`` steps; a crafted one that needs more (14 KB of ``params`` nesting lists: about
    5,600 steps, 6 ms) is checked on a thread, and evaluated on one too (``params`` over 1 KiB, although
    the request is small enough to be evaluated on the loop), as is a stream item like it. Checked on a
    real server sharing the test's loop: where each check and each evaluation ran, and that the crafted
    requests get their refusals (an unknown param, a list over its cap) while small ones are answered."""

    from google.protobuf import struct_pb2

    from lossd.server.interceptors import _large_requests
    from lossd.server.rpc import INLINE_MAX_BYTES, LossService, _caps

    loop_thread = threading.get_ident()
    checks: list[tuple[bool, int | None]] = []  # (on the loop thread, max_steps)
    real_check = _large_requests.check_request

    def recording_check(message, at_least=0, max_steps=None):  # type: ignore[no-untyped-def]
        checks.append((threading.get_ident() == loop_thread, max_steps))
        real_check(message, at_least=at_least, max_steps=max_steps)

    evaluated: list[bool] = []  # on the loop thread
    real_on_loop = LossService._on_loop

    def recording_on_loop(self, name, work, *args):  # type: ignore[no-untyped-def]
        evaluated.append(True)
        return real_on_loop(self, name, work, *args)

    monkeypatch.setattr(_large_requests, "check_request", recording_check)
    monkeypatch.setattr(LossService, "_on_loop", recording_on_loop)
    x = np.arange(100, dtype=np.float32)
    small = build_request("mse_loss", x, x + 1)[0]
    nested = struct_pb2.Value(number_value=1.0)
    for _ in range(4):
        nested = struct_pb2.Value(list_value=struct_pb2.ListValue(values=[nested]))
    crafted = build_request("mse_loss", x, x + 1)[0]
    for i in range(400):
        crafted.params.fields[f"k{i}"].CopyFrom(nested)
    over_cap = build_request("mse_loss", x, x + 1)[0]
    over_cap.CopyFrom(crafted)
    over_cap.params["k0"] = list(range(_caps.MAX_ITEMS + 1))
    assert small.ByteSize() <= _caps.MAX_STRING_BYTES < crafted.ByteSize() <= INLINE_MAX_BYTES
    assert over_cap.ByteSize() <= 64 * 1024  # parsed on the loop

    async def calls(client) -> list[object]:  # type: ignore[no-untyped-def]
        outcomes: list[object] = []
        for request in (small, crafted, over_cap):
            try:
                outcomes.append(await client.evaluate_request(request))
            except InvalidArgument as e:
                outcomes.append(e)
            outcomes.append(len(evaluated))
        outcomes.append(await _stream(client, [small, crafted, small]))
        outcomes.append(len(evaluated))
        return outcomes

    small_reply, after_small, crafted_reply, after_crafted, over_reply, after_over, streamed, after_stream = (
        on_this_loop(calls, batch_window_us=0))
    assert isinstance(small_reply, EvaluateResult) and small_reply.value == 1.0
    assert after_small == 1  # evaluated on the loop
    assert isinstance(crafted_reply, InvalidArgument) and crafted_reply.field.startswith("params.k"), crafted_reply
    assert "has no parameter" in str(crafted_reply)
    assert isinstance(over_reply, InvalidArgument), over_reply
    assert over_reply.field == "params.fields.k0.list_value.values", over_reply.field
    assert after_crafted == after_over == 1  # neither evaluated on the loop
    # small: checked on the loop within the steps; the crafted ones: tried there, then on a thread
    steps = _caps.LOOP_CHECK_STEPS
    assert checks[0] == (True, steps), checks
    assert checks[1:3] == [(True, steps), (False, None)], checks
    # over_cap: its broken list may come early in the map's order (refused on the loop) or not
    assert checks[3:] in ([(True, steps)], [(True, steps), (False, None)]), checks
    assert [r.value for r in streamed if isinstance(r, EvaluateResult)] == [1.0, 1.0]
    assert isinstance(streamed[1], InvalidArgument) and streamed[1].field.startswith("params.k"), streamed[1]
    assert after_stream == after_over + 2  # the two small items on the loop, the crafted one on a thread


def test_a_stream_item_of_5_million_dims_is_refused_without_holding_the_event_loop(monkeypatch):
    """An EvaluateLossStream item waits for the stream's byte budget on the event loop before its caps
    and wire rules are checked. It is charged the bytes it came in (what it holds while it waits), so
    a tensor declaring 5,000,000 dims in 5 MB is not read there (that took 0.8 s); the item is refused
    naming its shape, and the stream goes on. Checked on a real server sharing the test's loop."""

    from lossd.server.rpc import _service

    charged: list[int] = []
    acquire = _service._ByteBudget.acquire

    async def recording(self, size):  # type: ignore[no-untyped-def]
        charged.append(size)
        await acquire(self, size)

    monkeypatch.setattr(_service._ByteBudget, "acquire", recording)
    x = np.arange(100, dtype=np.float32)
    small = build_request("mse_loss", x, x + 1)[0]
    dims = build_request("mse_loss", x, x + 1)[0]
    dims.inputs["y_pred"].shape[:] = [1] * 5_000_000
    dims.inputs["y_pred"].raw = b"\0\0\0\0"

    results = on_this_loop(lambda client: _stream(client, [small, dims, small]))
    assert [r.value for r in results if isinstance(r, EvaluateResult)] == [1.0, 1.0]
    assert isinstance(results[1], InvalidArgument), results[1]
    assert results[1].field.startswith("inputs.y_pred"), results[1]
    assert "64" in str(results[1]), results[1]  # the dims cap
    charged = [size for size in charged if size]  # the small ones, evaluated on the loop, wait for replies only
    assert len(charged) == 1 and dims.ByteSize() <= charged[0] <= dims.ByteSize() + 64, charged  # its received bytes


def test_a_stream_item_id_over_the_caps_is_refused_without_being_echoed():
    """A stream item's own ``id`` is a string like any other: at most 1 KiB. One over it gets an error
    reply naming ``id``, which does not echo it back (a 5 MB id was echoed in full); the stream goes on."""
    x = np.arange(100, dtype=np.float32)
    requests = [build_request("mse_loss", x, x + 1)[0] for _ in range(3)]

    async def calls(client):  # type: ignore[no-untyped-def]
        ids = ["a", "b" * 5_000_000, "c"]
        stream = lossd_pb2_grpc.LossServiceStub(client.channel).EvaluateLossStream(
            lossd_pb2.EvaluateLossStreamRequest(id=i, request=r) for i, r in zip(ids, requests))
        return [reply async for reply in stream]

    from lossd.v1 import lossd_pb2, lossd_pb2_grpc

    replies = on_this_loop(calls)
    assert [r.id for r in replies] == ["a", "", "c"]
    assert replies[0].response.value == replies[2].response.value == 1.0
    assert replies[1].error.field == "id" and "5000000 characters" in replies[1].error.message, replies[1]


def test_a_stream_read_slowly_holds_replies_within_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A few KB of request can ask for a megabyte of reply (``reduction='none'`` over (N, 1) and (1, N)).
    The stream's byte window counts the replies computed and not yet sent, so a client that sends fast and
    reads nothing holds the server at one reply past its window (1 MiB here), not a reply per item in flight
    (10 computed before, with 8 items in flight). The client's flow-control window stays at its initial size
    (no BDP probing), so that gRPC itself takes no reply into its buffers."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from lossd.server.rpc import _service
    from lossd.v1 import lossd_pb2
    from support.servers import serve_in_thread

    computed = []
    evaluate = _service.handle_evaluate_bytes
    monkeypatch.setattr(_service, "handle_evaluate_bytes", lambda *a, **k: computed.append(1) or evaluate(*a, **k))

    class Served:  # a LossService with a 1 MiB stream window, served as lossd serves it
        port = 0

        async def start(self) -> None:
            self.server = grpc.aio.server()
            service = _service.LossService(REGISTRY, ThreadPoolExecutor(2), None, 10**8, stream_window_bytes=1 << 20)
            _service.add_loss_service(service, self.server)
            self.port = self.server.add_insecure_port("127.0.0.1:0")
            await self.server.start()

        async def close(self) -> None:
            await self.server.stop(None)

    async def build() -> Served:
        return Served()

    n = 512  # a reply of n * n float32: 1 MiB
    item, _ = build_request("mse_loss", inputs={"input": np.ones((n, 1), np.float32),
                                                "target": np.zeros((1, n), np.float32)}, reduction="none")
    with serve_in_thread(build) as port, \
            grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.http2.bdp_probe", 0)]) as channel:
        call = channel.stream_stream("/lossd.v1.LossService/EvaluateLossStream",
                                     request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=lossd_pb2.EvaluateLossStreamResponse.FromString)
        replies = call(iter(lossd_pb2.EvaluateLossStreamRequest(id=str(i), request=item) for i in range(40)),
                       timeout=60)
        time.sleep(2)  # read nothing
        assert 1 <= len(computed) <= 3, len(computed)
        got = list(replies)
    assert [r.id for r in got] == [str(i) for i in range(40)]
    assert all(np.frombuffer(r.response.loss.raw, np.float32).size == n * n for r in got)


def test_a_streams_byte_window_is_the_servers_message_limit(monkeypatch):
    """docs/performance.md: at most --max-message-bytes of a stream's items are in flight. The server was
    built without it, so the window stayed 256 MiB: a server at 5 MB held 11 unread replies (46 MB) of a
    stream whose client read nothing (an audit, 2026-12-06)."""
    from lossd.server.rpc import _service

    limits: list[int] = []
    init = _service._ByteBudget.__init__

    def recording(self, limit):  # type: ignore[no-untyped-def]
        limits.append(limit)
        init(self, limit)

    monkeypatch.setattr(_service._ByteBudget, "__init__", recording)
    x = np.arange(100, dtype=np.float32)
    results = on_this_loop(lambda client: _stream(client, [build_request("mse_loss", x, x + 1)[0]]),
                           max_message_bytes=5_000_000)
    assert [r.value for r in results] == [1.0]
    assert limits == [5_000_000], limits
