"""EvaluateLoss is a unary call, served client-streaming (``add_loss_service``) so that gRPC keeps no reference to
the received request once it is parsed (docs/performance.md, "Peak RSS"). What a unary call must still be, checked
through a real server: one request message (none is ``INVALID_ARGUMENT`` at once; a second one is not read, and
the end of the stream is not waited for), the same answer to every unary client, and the caps of a large
request checked before it is evaluated. Cancellation and deadlines: tests/robustness/test_cancellation.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossd.client import build_request
from lossd.v1 import lossd_pb2

PATH = "/lossd.v1.LossService/EvaluateLoss"


def _request(n: int) -> bytes:
    x = np.arange(n, dtype=np.float32)
    return build_request("mse_loss", x, np.zeros(n, dtype=np.float32))[0].SerializeToString()


@pytest.fixture()
def channel(server_address: str):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(server_address, options=[("grpc.max_send_message_length", -1),
                                                        ("grpc.max_receive_message_length", -1)]) as ch:
        yield ch


def test_a_request_is_answered_from_its_first_message_without_waiting_for_the_end_of_the_stream(
        channel: grpc.Channel) -> None:
    """Large or small, a request is answered from its first message, as gRPC's unary handler answers: a second
    message is never read, and a client that does not half-close still gets its reply. A large request (over
    64 KiB) waited for the end of the stream, so such a client held the call and its bytes, outside every
    limit (the limits' slots are taken once the message is read) and uncounted by a drain."""
    large, small = _request(100_000), _request(4)
    replied = threading.Event()

    def never_half_closing() -> Iterator[bytes]:
        yield large
        replied.wait(60)  # the stream stays open until the reply has come (or the test has failed)

    try:
        future = channel.stream_unary(PATH).future(never_half_closing(), timeout=30)
        reply = lossd_pb2.EvaluateLossResponse.FromString(future.result(timeout=30))
    finally:
        replied.set()
    assert reply.grads["y_pred"].shape == [100_000]
    for messages in ([large], [small], [small, _request(8)], [large, large]):
        reply = lossd_pb2.EvaluateLossResponse.FromString(channel.stream_unary(PATH)(iter(messages), timeout=30))
        assert reply.loss_name == "mse_loss" and set(reply.grads) == {"y_pred", "y_true"}
        n = len(reply.grads["y_pred"].shape) and reply.grads["y_pred"].shape[0]
        assert n == (100_000 if messages[0] is large else 4), n


def test_no_request_message_is_refused_at_once(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        channel.stream_unary(PATH)(iter([]), timeout=30)  # grpc's unary handler waited for the deadline
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "EvaluateLoss takes one request message; none came"


@pytest.mark.parametrize("n", [4, 100_000], ids=["small", "large"])
def test_unary_and_one_message_stream_clients_get_the_same_bytes(channel: grpc.Channel, n: int) -> None:
    request = _request(n)
    unary = channel.unary_unary(PATH)(request, timeout=30)
    streamed = channel.stream_unary(PATH)(iter([request]), timeout=30)
    a, b = (lossd_pb2.EvaluateLossResponse.FromString(r) for r in (unary, streamed))
    a.ClearField("timing")
    b.ClearField("timing")
    x = torch.arange(n, dtype=torch.float32)
    assert a == b and a.value == float(F.mse_loss(x, torch.zeros(n)))


def test_a_large_request_over_a_cap_is_refused_naming_the_field(channel: grpc.Channel) -> None:
    message = lossd_pb2.EvaluateLossRequest.FromString(_request(100_000))
    message.inputs["x" * 2000].CopyFrom(message.inputs["y_true"])  # a map key over the 1 KiB string cap
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(PATH)(message.SerializeToString(), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("inputs")


def test_a_small_call_schedules_no_task_of_its_own_to_close_the_request_stream(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A small request is answered from its first message without reading the end of the stream. Read through
    gRPC's request iterator, that left an async generator unfinished, which asyncio closes in a task of its own
    scheduled through ``call_soon_threadsafe`` (a wake-up of the loop): a task and a loop turn more for every
    call. ``only_request`` reads with ``context.read()`` instead. Counted on a real server sharing the test's
    loop with an async client: across 50 calls no task is created from another thread and none closes an
    async generator."""
    import asyncio
    from collections import Counter

    from lossd.client import AsyncClient
    from lossd.server import ServerConfig, create_server

    async def run() -> Counter[str]:
        loop = asyncio.get_running_loop()
        seen: Counter[str] = Counter()
        create_task, call_soon_threadsafe = loop.create_task, loop.call_soon_threadsafe

        def counting_task(coro: Any, **kwargs: Any) -> Any:
            seen["task " + (getattr(coro, "__qualname__", None) or type(coro).__name__)] += 1
            return create_task(coro, **kwargs)

        def counting_threadsafe(callback: Any, *args: Any, **kwargs: Any) -> Any:
            if callback == loop.create_task:  # asyncio's finalizer of an async generator
                seen["create_task from another thread"] += 1
            return call_soon_threadsafe(callback, *args, **kwargs)

        server = await create_server(ServerConfig(host="127.0.0.1", port=0, device="cpu", plugins="none",
                                                  data_dir=str(tmp_path / "data")))
        await server.start()
        try:
            async with AsyncClient(f"127.0.0.1:{server.port}") as client:
                x = np.arange(100, dtype=np.float32)
                await client.evaluate("mse_loss", x, x + 1)  # warm-up: the plan, the channel
                loop.create_task, loop.call_soon_threadsafe = counting_task, counting_threadsafe  # type: ignore[method-assign]
                try:
                    for _ in range(50):
                        got = await client.evaluate("mse_loss", x, x + 1)
                        assert got.value == 1.0
                    await asyncio.sleep(0.2)  # anything scheduled by the calls has run
                finally:
                    loop.create_task, loop.call_soon_threadsafe = create_task, call_soon_threadsafe  # type: ignore[method-assign]
        finally:
            await server.close()
        return seen

    seen = asyncio.run(run())
    assert seen["task _handle_exceptions"] >= 50, seen  # gRPC's own task for each call: the counting works
    assert seen["create_task from another thread"] == 0, seen
    assert not [name for name in seen if "athrow" in name or "aclose" in name], seen
