"""When a call waits for company under ``--batch-window-us`` (``DynamicBatcher.arrive``): only
when its group is pending or another call's RPC (task) of its group is in flight, never for its own
task nor for calls of other groups."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from lossd.server.losses import REGISTRY
from lossd.server.rpc import DynamicBatcher, _batching
from lossd.v1 import lossd_pb2


def _request(x: float, loss: str = "mse_loss") -> lossd_pb2.EvaluateLossRequest:
    def t(v: float) -> lossd_pb2.Tensor:
        return lossd_pb2.Tensor(dtype="float32", shape=[1], values=[v])
    return lossd_pb2.EvaluateLossRequest(loss=loss, inputs={"y_pred": t(x), "y_true": t(0.0)})


async def _held(batcher: DynamicBatcher, key: Hashable) -> tuple[asyncio.Task[None], asyncio.Event]:
    """Another call's RPC (a task of its own) in flight in group ``key`` until the returned event is set."""
    started, release = asyncio.Event(), asyncio.Event()

    async def under_way() -> None:
        batcher.arrive(key)
        started.set()
        await release.wait()

    task = asyncio.create_task(under_way())
    await started.wait()
    return task, release


async def _arrives(batcher: DynamicBatcher, key: Hashable) -> bool:
    """Whether a new call (a task of its own) arriving in group ``key`` waits for company."""
    return await asyncio.create_task(_arrive(batcher, key))


async def _arrive(batcher: DynamicBatcher, key: Hashable) -> bool:
    return batcher.arrive(key)


def test_a_task_calling_again_is_not_company_and_an_ended_task_no_longer_counts() -> None:
    async def main() -> list[object]:
        batcher = DynamicBatcher(REGISTRY, None, 10, window_us=1000)
        key = batcher.key(_request(1.0))
        seen = [batcher.arrive(key), batcher.arrive(key), batcher.in_flight]  # one task, twice
        other, release = await _held(batcher, key)
        seen += [batcher.in_flight, batcher.arrive(key)]  # another call under way: company
        release.set()
        await other
        await asyncio.sleep(0)  # its done callbacks run
        seen += [batcher.in_flight, batcher.arrive(key), batcher.alone]
        return seen

    assert asyncio.run(main()) == [False, False, 1, 2, True, 1, False, 3]


def test_calls_that_find_company_wait_and_are_evaluated_together() -> None:
    async def main() -> tuple[list[float], int, int]:
        batcher = DynamicBatcher(REGISTRY, None, 10, window_us=100_000)
        key = batcher.key(_request(0.0))

        async def call(x: float) -> float:
            request = _request(x)
            assert batcher.arrive(batcher.key(request))
            reply = await batcher.submit(batcher.key(request), request)
            return lossd_pb2.EvaluateLossResponse.FromString(reply).value

        background, release = await _held(batcher, key)  # another RPC of the group in flight
        values = list(await asyncio.gather(call(1.0), call(3.0)))
        release.set()
        await background
        return values, batcher.largest, batcher.alone

    assert asyncio.run(main()) == ([1.0, 9.0], 2, 1)  # the background call's arrival was alone


def test_a_call_of_another_group_in_flight_is_no_company() -> None:
    async def main() -> list[object]:
        batcher = DynamicBatcher(REGISTRY, None, 10, window_us=100_000)
        mse, l1 = batcher.key(_request(1.0)), batcher.key(_request(1.0, "l1_loss"))
        assert mse is not None and l1 is not None and mse != l1
        background, release = await _held(batcher, l1)
        seen: list[object] = [await _arrives(batcher, mse)]  # alone: evaluated at once
        await asyncio.sleep(0)  # its done callbacks run
        seen.append(batcher.in_flight)  # the l1 call's
        seen.append(await _arrives(batcher, l1))  # the l1 call in flight is company
        release.set()
        await background
        await asyncio.sleep(0)
        seen.append(batcher.in_flight)
        return seen

    assert asyncio.run(main()) == [False, 1, True, 0]


def test_a_call_in_flight_for_long_is_no_company(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call whose reply cannot be sent (its peer grants no flow-control window) stays in flight as long as its
    connection lives: it made every lone caller of its signature wait the window at each call (an audit,
    2026-12-06). Past STALE_COMPANY_S in flight it is no company; a call that arrived just before is."""
    now = [100.0]
    monkeypatch.setattr(_batching.time, "monotonic", lambda: now[0])

    async def main() -> list[object]:
        batcher = DynamicBatcher(REGISTRY, None, 10, window_us=1000)
        key = batcher.key(_request(1.0))
        background, release = await _held(batcher, key)  # a call that will stall
        seen: list[object] = [await _arrives(batcher, key)]  # it arrived just now: company
        await asyncio.sleep(0)  # the lone call's done callbacks run
        now[0] += 1.5 * _batching.STALE_COMPANY_S
        seen.append(await _arrives(batcher, key))  # the stalled call is in flight still, but no company
        await asyncio.sleep(0)
        seen.append(batcher.in_flight)
        release.set()
        await background
        return seen

    assert asyncio.run(main()) == [True, False, 1]
