"""AsyncClient against a real server: the same methods, results and errors as Client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pytest
import torch

from lossd.client import (
    AsyncClient,
    Client,
    EvaluateResult,
    InvalidArgument,
    NotFound,
    Unavailable,
    build_request,
)

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


def test_constructed_outside_a_running_loop() -> None:
    c = AsyncClient("127.0.0.1:1")  # no event loop here: the channel opens on first use
    assert c.target == "127.0.0.1:1"
    asyncio.run(c.close())
