"""Dynamic batching of concurrent EvaluateLoss calls (``--batch-window-us``), after Triton's batcher.

A small EvaluateLoss call (tensors evaluated on the event loop, see ``INLINE_MAX_BYTES``)
of a loss registered ``vectorized`` joins the pending group of calls that share its
:func:`~lossd.server.rpc._batch.group_key` (loss, params, dtypes, shapes, wanted
gradients). A group is evaluated, by :func:`~lossd.server.rpc._batch.evaluate_group`,
the same path as EvaluateLossBatch (one vectorized torch call where that is
bit-identical), when the first of these happens:

- ``window_us`` microseconds have passed since its first call arrived;
- it holds ``max_items`` calls.

So a call waits at most the window, and under concurrency the calls that arrive within one
window share one torch call. A call waits only when there is company to wait for: its group
is pending, or another call of its group is in flight (its RPC under way, reply included; see
:meth:`DynamicBatcher.arrive`). A lone client's call comes after its previous call's RPC has
ended, so it is evaluated at once, as with the window off, however often it calls.

Every call gets its own reply or its own error, as if it had been evaluated alone. A call
cancelled while it waits leaves the group (its item is still evaluated with the others and
its reply dropped). With ``window_us=0`` the batcher is off and nothing here runs.

    >>> import asyncio
    >>> from lossd.server.losses import REGISTRY
    >>> from lossd.v1 import lossd_pb2
    >>> t = lambda x: lossd_pb2.Tensor(dtype="float32", shape=[1], values=[x])
    >>> async def two_calls():
    ...     batcher = DynamicBatcher(REGISTRY, None, 10, window_us=2000)
    ...     calls = [lossd_pb2.EvaluateLossRequest(loss="mse", inputs={"y_pred": t(x), "y_true": t(0.0)})
    ...              for x in (1.0, 3.0)]
    ...     replies = await asyncio.gather(*(batcher.submit(batcher.key(c), c) for c in calls))
    ...     return [lossd_pb2.EvaluateLossResponse.FromString(r).value for r in replies], batcher.largest
    >>> asyncio.run(two_calls())
    ([1.0, 9.0], 2)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..._wire import FieldError, TensorLimits
from ...v1 import lossd_pb2
from ..losses import Registry
from ._batch import GroupPlan, evaluate_group, group_key
from ._plan import Plan, Plans

log = logging.getLogger("lossd.server")

__all__ = ["DEFAULT_BATCH_WINDOW_ITEMS", "DynamicBatcher"]

#: Most calls evaluated together by the batcher.
DEFAULT_BATCH_WINDOW_ITEMS = 256
#: A call in flight for longer than this is no company for a new call of its group: its reply was computed long
#: ago, and it waits on its peer. One whose peer grants no flow-control window stays in flight as long as the
#: connection lives, and made every lone caller of its signature wait the window at each call (an audit,
#: 2026-12-06); 16 clients' calls take 5-20 ms from arrival to their RPC's end.
STALE_COMPANY_S = 0.05


@dataclass
class _Group:
    items: list[lossd_pb2.EvaluateLossRequest] = field(default_factory=list)
    waiters: list[asyncio.Future[bytes]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class DynamicBatcher:
    """Pending groups of compatible EvaluateLoss calls, on one event loop (not thread-safe: the
    servicer's coroutines call it)."""

    def __init__(
        self,
        registry: Registry,
        device: torch.device | None,
        limits: TensorLimits | int,
        window_us: int,
        max_items: int = DEFAULT_BATCH_WINDOW_ITEMS,
        plans: Plans[Plan] | None = None,
        group_plans: Plans[GroupPlan] | None = None,
    ) -> None:
        self._registry = registry
        #: The service's validated signatures: a call left alone when the window closes uses them; a group
        #: uses its signature's plan.
        self._plans = plans
        self._group_plans = group_plans
        self._device = device
        self._limits = limits
        self._window_s = window_us / 1e6
        self._max_items = max(1, max_items)
        self._groups: dict[Hashable, _Group] = {}
        #: The most calls evaluated together so far (tests and benchmarks read it).
        self.largest = 0
        #: Calls evaluated in groups of two or more.
        self.batched_calls = 0
        #: Groups evaluated, and the calls in them (their ratio: calls per torch call).
        self.groups = 0
        self.calls = 0
        #: Calls evaluated at once, with nobody to wait for (see :meth:`arrive`).
        self.alone = 0
        self._in_flight: dict[Hashable, dict[asyncio.Task[Any], float]] = {}  # by group key: task -> its arrival

    def key(self, request: lossd_pb2.EvaluateLossRequest) -> Hashable | None:
        """The group a call joins, or ``None`` when it is evaluated on its own."""
        return group_key(self._registry, request)

    def arrive(self, key: Hashable) -> bool:
        """Count the calling task (a call's RPC) in flight in group ``key`` until it ends, and say
        whether its call should wait for company (then :meth:`submit` it): when its group is pending
        or another task of its group arrived within :data:`STALE_COMPANY_S` and is in flight (calls of
        other groups cannot join it). Else it is evaluated at once by the caller, as with the window off,
        and counted in ``alone``."""
        task = asyncio.current_task()
        tasks = self._in_flight.get(key)
        if tasks is None:
            tasks = self._in_flight[key] = {}
        now = time.monotonic()
        wait = key in self._groups or any(now - since < STALE_COMPANY_S for other, since in tasks.items()
                                          if other is not task)
        if task is not None and task not in tasks:
            tasks[task] = now
            task.add_done_callback(functools.partial(self._ended, key))
        if not wait:
            self.alone += 1
        return wait

    def _ended(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        tasks = self._in_flight.get(key)
        if tasks is not None:
            tasks.pop(task, None)
            if not tasks:
                del self._in_flight[key]

    @property
    def in_flight(self) -> int:
        """Tasks counted by :meth:`arrive` that have not ended."""
        return sum(map(len, self._in_flight.values()))

    async def submit(self, key: Hashable, request: lossd_pb2.EvaluateLossRequest) -> bytes:
        """The call's serialized reply once its group is evaluated; raises its ``FieldError``."""
        loop = asyncio.get_running_loop()
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group()
            group.timer = loop.call_later(self._window_s, self._flush, key, group)
        waiter: asyncio.Future[bytes] = loop.create_future()
        group.items.append(request)
        group.waiters.append(waiter)
        if len(group.items) >= self._max_items:
            self._flush(key, group)
        try:
            return await waiter
        finally:  # a refusal raised here holds this frame (its traceback), the future holds the refusal
            del waiter, group

    def _flush(self, key: Hashable, group: _Group) -> None:
        if self._groups.get(key) is not group:
            return  # already evaluated
        del self._groups[key]
        if group.timer is not None:
            group.timer.cancel()
        self.largest = max(self.largest, len(group.items))
        self.groups += 1
        self.calls += len(group.items)
        if len(group.items) > 1:
            self.batched_calls += len(group.items)
        try:
            outcomes = evaluate_group(self._registry, group.items, self._device, self._limits, self._plans,
                                      self._group_plans, key)
        except Exception as e:  # evaluate_group answers per item; this is a defect: every waiter gets it
            log.exception("evaluating a batch window's group of %d calls failed", len(group.items))
            outcomes = [e.with_traceback(None)] * len(group.items)  # type: ignore[list-item]
        for waiter, outcome in zip(group.waiters, outcomes):
            if waiter.done():  # its call was cancelled while it waited
                continue
            if isinstance(outcome, (bytes, bytearray)):
                waiter.set_result(bytes(outcome))
            else:
                waiter.set_exception(outcome if isinstance(outcome, FieldError) else RuntimeError(str(outcome)))
