"""AsyncClient against a real server: the same methods, results and errors as Client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np
import pytest
import torch

from lossd.client import (
    AsyncClient,
    Cancelled,
    Client,
    EvaluateResult,
    InvalidArgument,
    LossdError,
    NotFound,
    Unavailable,
    build_request,
)
from support.gated import start_gated

T = TypeVar("T")


def run(server_address: str, body: Callable[[AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with AsyncClient(server_address) as c:
            return await body(c)

    return asyncio.run(main())


def test_the_async_client_has_the_sync_clients_public_methods() -> None:
    def public(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")}

    assert public(Client) == public(AsyncClient)


def test_evaluate_matches_the_sync_client(server_address: str, client: Client) -> None:
    x = np.array([[0.3, -1.0, 2.0], [1.5, 0.0, -0.5]], np.float32)
    y = np.array([2, 0])
    result = run(server_address, lambda c: c.evaluate("cross_entropy", x, y, label_smoothing=0.1))
    expected = client.evaluate("cross_entropy", x, y, label_smoothing=0.1)
    assert result.value == expected.value and result.loss_name == "cross_entropy"
    np.testing.assert_array_equal(result.grads["y_pred"], expected.grads["y_pred"])


def test_torch_in_torch_out(server_address: str) -> None:
    x = torch.tensor([0.5, 2.0])
    result = run(server_address, lambda c: c.evaluate("mse", x, torch.ones(2), reduction="sum"))
    assert isinstance(result.grads["y_pred"], torch.Tensor) and result.value == 1.25


def test_list_losses_and_health(server_address: str) -> None:
    async def body(c: AsyncClient) -> tuple[list[str], str]:
        losses, status = await asyncio.gather(c.list_losses("mse"), c.health())
        return [i.name for i in losses], status

    assert run(server_address, body) == (["mse_loss"], "SERVING")


def test_errors_are_typed_with_field_violations(server_address: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        run(server_address, lambda c: c.evaluate("mse", [1.0], [0.0], reduction="avg"))
    assert err.value.field == "params.reduction" and err.value.violations[0].field == "params.reduction"
    with pytest.raises(NotFound):
        run(server_address, lambda c: c.health("no.such.Service"))


def _requests() -> list[Any]:
    reqs = [build_request("mse", [float(i)], [0.0])[0] for i in range(6)]
    reqs[3] = build_request("mse", [1.0], [0.0], reduction="avg")[0]
    return reqs


def test_stream_from_a_list_and_from_an_async_generator(server_address: str) -> None:
    async def gen() -> AsyncIterator[Any]:
        for r in _requests():
            await asyncio.sleep(0)
            yield r

    async def body(c: AsyncClient) -> tuple[list[Any], list[Any]]:
        from_list = [r async for r in c.evaluate_stream(_requests(), raise_on_error=False)]
        from_gen = [r async for r in c.evaluate_stream(gen(), raise_on_error=False)]
        return from_list, from_gen

    for results in run(server_address, body):
        assert [r.value if isinstance(r, EvaluateResult) else type(r).__name__ for r in results] == [
            0.0, 1.0, 4.0, "InvalidArgument", 16.0, 25.0
        ]


def test_stream_raises_on_the_first_bad_item(server_address: str) -> None:
    seen: list[float | None] = []

    async def body(c: AsyncClient) -> None:
        async for r in c.evaluate_stream(_requests()):
            seen.append(r.value)

    with pytest.raises(InvalidArgument) as err:
        run(server_address, body)
    assert err.value.item == 3 and seen == [0.0, 1.0, 4.0]


def test_many_concurrent_calls_on_one_channel(server_address: str) -> None:
    async def body(c: AsyncClient) -> list[float | None]:
        results = await asyncio.gather(*(c.evaluate("mse", [float(i)], [0.0]) for i in range(50)))
        return [r.value for r in results]

    assert run(server_address, body) == [float(i * i) for i in range(50)]


def test_unreachable_server_is_unavailable() -> None:
    async def main() -> None:
        async with AsyncClient("127.0.0.1:1", timeout=5, max_attempts=1) as c:
            await c.list_losses()

    with pytest.raises(Unavailable):
        asyncio.run(main())


def test_a_second_event_loop_is_told_to_make_its_own_client(server_address: str) -> None:
    """asyncio.run() twice on one client said "Event loop is closed" (gRPC's channel is bound to the first loop;
    two threads' loops: "attached to a different loop" and a never-awaited coroutine): the SDK audit, 2026-12-06."""
    c = AsyncClient(server_address)
    x = np.ones(3, np.float32)

    async def once() -> float:
        return (await c.evaluate("mse", x, x * 0)).value

    assert asyncio.run(once()) == 1.0
    with pytest.raises(RuntimeError, match="belongs to the event loop it was first used in; make one AsyncClient per "
                                           "event loop"):
        asyncio.run(once())


def test_constructed_outside_a_running_loop() -> None:
    c = AsyncClient("127.0.0.1:1")  # no event loop here: the channel opens on first use
    assert c.target == "127.0.0.1:1"
    asyncio.run(c.close())


# --- the same errors as Client where grpc.aio has its own: closing, request iterators -------------


class Hold(grpc.aio.ServerInterceptor):
    """Holds every EvaluateLoss call before its handler until ``release`` is set: a call stays in flight
    for as long as a test needs; ``arrived`` is set when one is held."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        if details.method == "/lossd.v1.LossService/EvaluateLoss":
            self.arrived.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait)
        return await continuation(details)


@pytest.fixture()
def held() -> Iterator[tuple[str, Hold]]:
    hold = Hold()
    with start_gated([hold]) as address:
        try:
            yield address, hold
        finally:
            hold.release.set()


async def _when_held(hold: Hold) -> None:
    """Wait (without blocking the loop) until the server holds the call."""
    assert await asyncio.to_thread(hold.arrived.wait, 30)


def test_a_call_in_flight_when_the_client_closes_raises_cancelled_in_both_clients(held: tuple[str, Hold]) -> None:
    address, hold = held
    client, outcome = Client(address), []

    def call() -> None:
        try:
            client.evaluate("mse", [1.0], [0.0])
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=call)
    thread.start()
    assert hold.arrived.wait(30)
    client.close()
    thread.join(30)
    assert [type(e) for e in outcome] == [Cancelled]
    hold.arrived.clear()

    async def main() -> None:
        c = AsyncClient(address)
        task = asyncio.create_task(c.evaluate("mse", [1.0], [0.0]))
        await _when_held(hold)
        await c.close()
        with pytest.raises(Cancelled, match="closed while the call was in flight"):
            await task

    asyncio.run(main())


def test_a_cancelled_task_still_gets_cancelled_error(held: tuple[str, Hold]) -> None:
    address, hold = held

    async def main() -> None:
        async with AsyncClient(address) as c:
            task = asyncio.create_task(c.evaluate("mse", [1.0], [0.0]))
            await _when_held(hold)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(asyncio.TimeoutError):  # wait_for cancels the call's task: its timeout, not Cancelled
                await asyncio.wait_for(c.evaluate("mse", [1.0], [0.0]), 0.05)
            hold.release.set()
            assert (await c.evaluate("mse", [2.0], [0.0])).value == 4.0  # the client still works

    asyncio.run(main())


def test_a_call_after_close_raises_cancelled_in_both_clients(server_address: str) -> None:
    with Client(server_address) as client:
        assert client.health() == "SERVING"
    never_opened = Client(server_address)
    never_opened.close()
    for c in (client, never_opened):
        with pytest.raises(Cancelled, match="is closed"):
            c.evaluate("mse", [1.0], [0.0])
        with pytest.raises(Cancelled, match="is closed"):
            list(c.watch("0123456789ab"))
        with pytest.raises(Cancelled, match="is closed"):
            list(c.evaluate_stream([build_request("mse", [1.0], [0.0])[0]]))

    async def main() -> None:
        async with AsyncClient(server_address) as c:
            assert await c.health() == "SERVING"
        with pytest.raises(Cancelled, match="is closed"):
            await c.evaluate("mse", [1.0], [0.0])
        with pytest.raises(Cancelled, match="is closed"):
            [e async for e in c.watch("0123456789ab")]
        with pytest.raises(Cancelled, match="is closed"):
            await c.evaluate_many([{"loss": "mse", "y_pred": [1.0], "y_true": [0.0]}])

    asyncio.run(main())


def _failing_requests() -> Iterator[Any]:
    yield build_request("mse", [1.0], [0.0])[0]
    yield build_request("mse", [2.0], [0.0])[0]
    raise ValueError("my generator failed")


async def _failing_async_requests() -> AsyncIterator[Any]:
    for r in _failing_requests():
        yield r


def test_a_raising_request_iterator_ends_the_stream_the_same_in_both_clients(server_address: str) -> None:
    """The requests before the failure are answered and yielded, then a LossdError (UNKNOWN, as the sync
    gRPC client raises it) caused by the iterator's own exception; never asyncio.CancelledError."""
    outcomes: list[tuple[list[float | None], LossdError]] = []
    with Client(server_address) as client:
        got: list[float | None] = []
        with pytest.raises(LossdError) as err:
            for r in client.evaluate_stream(_failing_requests()):
                got.append(r.value)
        outcomes.append((got, err.value))

    async def main(requests: Callable[[], Any]) -> None:
        async with AsyncClient(server_address) as c:
            got: list[float | None] = []
            with pytest.raises(LossdError) as err:
                async for r in c.evaluate_stream(requests()):
                    got.append(r.value)
            outcomes.append((got, err.value))

    asyncio.run(main(_failing_requests))
    asyncio.run(main(_failing_async_requests))
    for got, error in outcomes:
        assert got == [1.0, 4.0]
        assert type(error) is LossdError and error.code == grpc.StatusCode.UNKNOWN
        assert "Exception iterating requests: ValueError: my generator failed" in error.message
        assert isinstance(error.__cause__, ValueError)
