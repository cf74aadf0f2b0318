"""Where an evaluation runs. Small requests (``LossService._inline``: a message of at most
``INLINE_MAX_BYTES``, its tensors in it) run on the event loop, others on the thread pool. And the rule
that moves a loss off the event loop (``LossService._on_loop``): a loss whose small evaluations take
over ``INLINE_MAX_CPU_S`` of CPU, ``SLOW_IN_A_ROW`` calls in a row after its first ``SLOW_WARMUP``, goes
to the thread pool; warm-up calls and a lone slow call do not count."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from lossd._framing import split_payloads
from lossd._wire import FieldError
from lossd.client import build_request
from lossd.server.losses import REGISTRY
from lossd.server.rpc import INLINE_MAX_BYTES, INLINE_MAX_ENTRIES, LossService, ReceivedRequest
from lossd.server.rpc._service import (
    INLINE_HARD_CPU_S, INLINE_MAX_CPU_S, INLINE_MAX_DEBT_S, SLOW_IN_A_ROW, SLOW_WARMUP,
)
from lossd.v1 import lossd_pb2


def _burn(seconds: float) -> str:
    """Spend ``seconds`` of this thread's CPU (0: return at once)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return "done"


def _service() -> LossService:
    return LossService(REGISTRY, ThreadPoolExecutor(1), torch.device("cpu"), 10**6)


#: The losses never evaluated on the loop: an operator plugin's, and those whose work grows faster than their
#: inputs (``LossSpec.work``).
NEVER = {s.name for s in REGISTRY if not s.inline or s.work is not None}


def _found(service: LossService) -> set[str]:
    """The losses the service has found slow."""
    return service.slow_losses - NEVER


SLOW, FAST = 3 * INLINE_MAX_CPU_S, 0.0


def test_warm_up_calls_and_interrupted_streaks_do_not_make_a_loss_slow() -> None:
    service = _service()
    for _ in range(SLOW_WARMUP):  # a first call builds the plan and pays torch's warm-up
        assert service._on_loop("mse_loss", _burn, SLOW) == "done"
    for _ in range(3):
        for _ in range(SLOW_IN_A_ROW - 1):
            service._on_loop("mse_loss", _burn, SLOW)
        service._on_loop("mse_loss", _burn, FAST)  # a fast call ends the streak
    assert _found(service) == set()


def test_a_loss_slow_in_a_row_after_its_warm_up_goes_to_the_pool_and_others_stay() -> None:
    service = _service()
    for i in range(SLOW_WARMUP + SLOW_IN_A_ROW):
        assert "hausdorff_er_loss" not in service.slow_losses, i
        service._on_loop("hausdorff_er_loss", _burn, SLOW)
        service._on_loop("mse_loss", _burn, FAST)
    assert _found(service) == {"hausdorff_er_loss"}
    for _ in range(SLOW_WARMUP + SLOW_IN_A_ROW):  # a name the registry does not know is never kept
        service._on_loop("no_such_loss", _burn, SLOW)
    assert _found(service) == {"hausdorff_er_loss"}


def test_a_loss_is_judged_once_whichever_of_its_names_the_calls_use() -> None:
    service = _service()
    names = ["hausdorff_er_loss", "HausdorffERLoss", "hausdorff_er", "HausdorffERLoss3D"]
    for i in range(SLOW_WARMUP + SLOW_IN_A_ROW):
        assert not _found(service), i
        service._on_loop(names[i % len(names)], _burn, SLOW)
    assert _found(service) == {"hausdorff_er_loss"}  # its canonical name: every alias goes to the pool
    t = lambda: lossd_pb2.Tensor(dtype="float32", shape=[1], values=[0.0])  # noqa: E731
    for name in names:
        assert not service._inline(lossd_pb2.EvaluateLossRequest(loss=name, inputs={"input": t(), "target": t()}))
    assert service._inline(lossd_pb2.EvaluateLossRequest(loss="mse", inputs={"input": t(), "target": t()}))


class _Recording(ThreadPoolExecutor):
    """A pool that counts the work submitted to it."""

    def __init__(self) -> None:
        super().__init__(1)
        self.submitted = 0

    def submit(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        self.submitted += 1
        return super().submit(*args, **kwargs)


def _on_pool(request: lossd_pb2.EvaluateLossRequest | ReceivedRequest) -> tuple[bool, float]:
    """Whether ``request`` was evaluated on the thread pool (window off), and its loss value."""
    pool = _Recording()
    service = LossService(REGISTRY, pool, torch.device("cpu"), 10**8, batch_window_us=0)
    reply = lossd_pb2.EvaluateLossResponse.FromString(asyncio.run(service._run(request)))
    return pool.submitted == 1, reply.value


def _mse(n: int, encoding: str = "raw") -> lossd_pb2.EvaluateLossRequest:
    x = np.linspace(-1, 1, n, dtype=np.float32)
    return build_request("mse_loss", x, np.zeros_like(x), encoding=encoding)[0]


def test_small_requests_run_on_the_loop_and_large_ones_on_the_pool_whatever_their_encoding() -> None:
    elements = INLINE_MAX_BYTES // 4
    for encoding in ("raw", "values"):
        for n, pooled in [(100, False), (elements // 2 - 64, encoding == "values"), (elements, True)]:
            request = _mse(n, encoding)
            assert _on_pool(request)[0] is pooled, (encoding, n)
            assert (request.ByteSize() > INLINE_MAX_BYTES) is pooled  # the message's size decides


def test_a_small_request_whose_inputs_broadcast_to_millions_goes_to_the_pool() -> None:
    """16 KiB of float16 [1, 4000] and [4000, 1] broadcast to 16 million elements (0.14 s of mse_loss): a stream
    of such items, each followed by a fast one, held the event loop (an audit, 2026-12-06)."""
    x = np.linspace(-1, 1, 4000, dtype=np.float16)
    wide = build_request("mse_loss", x.reshape(1, -1), x.reshape(-1, 1), reduction="sum")[0]
    assert wide.ByteSize() < INLINE_MAX_BYTES
    pooled, value = _on_pool(wide)
    assert pooled and value == float(torch.nn.functional.mse_loss(
        torch.from_numpy(x).reshape(1, -1), torch.from_numpy(x).reshape(-1, 1), reduction="sum"))
    same = build_request("mse_loss", x.reshape(1, -1), x.reshape(1, -1) * 0, reduction="sum")[0]
    assert not _on_pool(same)[0]  # the same bytes, nothing broadcast: on the loop
    small = build_request("mse_loss", x[:16].reshape(1, -1), x[:16].reshape(-1, 1))[0]
    assert not _on_pool(small)[0]  # broadcast to 256 elements: on the loop


def test_very_slow_calls_send_their_loss_to_the_pool_however_they_alternate_with_fast_ones() -> None:
    """The streak rule counts slow calls in a row: slow, fast, slow, fast, ... never made one, while each slow
    call held the loop as long as it liked. A call over INLINE_HARD_CPU_S adds its time to its loss's debt."""
    service = _service()
    for _ in range(SLOW_WARMUP):
        service._on_loop("mse_loss", _burn, FAST)
    hard = 2.25 * INLINE_HARD_CPU_S  # 3 of them pass the debt by a third, 2 stay under it by a tenth
    for i in range(int(INLINE_MAX_DEBT_S // hard) + 1):
        assert "mse_loss" not in service.slow_losses, i
        service._on_loop("mse_loss", _burn, hard)
        service._on_loop("mse_loss", _burn, FAST)
    assert _found(service) == {"mse_loss"}
    other = _service()  # a few very slow calls far apart are forgiven (INLINE_DEBT_DRAIN a second)
    for _ in range(SLOW_WARMUP):
        other._on_loop("mse_loss", _burn, FAST)
    other._on_loop("mse_loss", _burn, hard)
    debt, since = other._loop_debt["mse_loss"]
    other._loop_debt["mse_loss"] = (debt, since - 3600)  # an hour ago
    for _ in range(int(INLINE_MAX_DEBT_S // hard)):
        other._on_loop("mse_loss", _burn, hard)
        other._on_loop("mse_loss", _burn, FAST)
    assert _found(other) == set()


def test_a_request_whose_payloads_were_split_off_goes_to_the_pool() -> None:
    request = _mse(100)
    received = ReceivedRequest(*split_payloads(request.SerializeToString(), lossd_pb2.EvaluateLossRequest,
                                               min_bytes=0))
    assert received.payloads and received.message.ByteSize() < 100  # the message alone looks tiny
    assert _on_pool(received) == (True, _on_pool(request)[1])


def test_a_small_message_declaring_a_huge_tensor_is_refused_on_the_loop_before_any_allocation() -> None:
    request = _mse(100)
    request.inputs["y_pred"].shape[:] = [10**8]  # 400 MB declared, 400 bytes sent
    request.inputs["y_true"].shape[:] = [10**8]
    pool = _Recording()
    service = LossService(REGISTRY, pool, torch.device("cpu"), 10**9, batch_window_us=0)
    start = time.perf_counter()
    with pytest.raises(FieldError, match=r"inputs\.y_(pred|true)") as refused:
        asyncio.run(service._run(request))
    assert time.perf_counter() - start < 1.0 and pool.submitted == 0
    assert "needs" in str(refused.value)  # the length rule, checked before decoding


def test_a_large_message_is_not_serialized_on_the_loop_to_be_sized() -> None:
    """A stream item (no received size) whose tensors' data alone is over the inline limit goes to the pool
    without ``ByteSize`` (which serializes it holding the GIL: 0.12 s for 100 MB); a received request is
    sized by its received bytes."""
    service = LossService(REGISTRY, ThreadPoolExecutor(1), torch.device("cpu"), 10**9, batch_window_us=0)
    large = _mse(INLINE_MAX_BYTES)  # 4× the limit in raw bytes

    class Sizing:
        sized = False

        def ByteSize(self) -> int:  # noqa: N802 - protobuf's name
            Sizing.sized = True
            return large.ByteSize()

        def __getattr__(self, name: str) -> object:
            return getattr(large, name)

    assert not service._inline(Sizing()) and not Sizing.sized  # type: ignore[arg-type]
    small = _mse(100)
    assert service._inline(small)
    received = ReceivedRequest(small, {}, INLINE_MAX_BYTES + 1)
    assert not service._inline(received.message, received.size)  # its received bytes decide


def test_a_small_message_with_many_entries_or_large_params_is_evaluated_on_the_pool() -> None:
    """Work that grows with the entries of a request, not its tensors, is bounded on the loop too: at most
    INLINE_MAX_ENTRIES inputs and grad_inputs in all (1,024 grad_inputs took 11 ms to evaluate), and
    params of at most 1 KiB (16 KB nesting lists took 11 ms to check and read); a request within both stays."""
    service = LossService(REGISTRY, ThreadPoolExecutor(1), torch.device("cpu"), 10**9, batch_window_us=0)
    within = _mse(100)
    within.grad_inputs.extend(["input"] * (INLINE_MAX_ENTRIES - len(within.inputs)))
    within.params["reduction"] = "sum"
    within.params["pad"] = "p" * 900  # a 1 KiB Struct at most: at most a few hundred values
    assert within.params.ByteSize() <= 1024 < within.ByteSize() <= INLINE_MAX_BYTES
    assert service._inline(within) and service._inline(within, within.ByteSize())
    entries = _mse(100)
    entries.CopyFrom(within)
    entries.grad_inputs.append("input")
    assert not service._inline(entries) and not service._inline(entries, entries.ByteSize())
    params = _mse(100)
    params.CopyFrom(within)
    params.params["more"] = [1.0] * 20
    assert params.ByteSize() <= INLINE_MAX_BYTES
    assert not service._inline(params) and not service._inline(params, params.ByteSize())


def test_the_loss_name_is_read_last_and_only_for_a_small_message() -> None:
    """A stream item's caps are not checked when the placement rule runs on the event loop: its loss name
    may be 100 MB (0.05 s to read, 0.1 s to look up), so it is read only once the message is known to
    be small."""
    service = LossService(REGISTRY, ThreadPoolExecutor(1), torch.device("cpu"), 10**9, batch_window_us=0)
    service.slow_losses.add("l1_loss")
    large = _mse(INLINE_MAX_BYTES)
    read: list[str] = []

    class Recording:
        def __getattr__(self, name: str) -> object:
            read.append(name)
            return getattr(large, name)

    assert not service._inline(Recording(), large.ByteSize())  # type: ignore[arg-type]
    assert "loss" not in read, read
    small = _mse(100)
    assert service._inline(small, small.ByteSize())
    small.loss = "l1_loss"
    assert not service._inline(small, small.ByteSize())  # slow: read, and found


def _plugin_registry(inline: bool = False):  # type: ignore[no-untyped-def]
    """The built-in losses and a plugin's ``sleepy_loss`` (``LossSpec.inline`` False, as the plugin loader
    adds it) that sleeps ``seconds`` and raises ``raise`` when it is given: time no CPU clock sees."""
    import dataclasses

    from lossd.server.losses import Input, Param, Registry, register_loss

    reg = Registry()
    for spec in REGISTRY:
        reg.add(spec)
    staged = Registry()

    @register_loss("sleepy_loss", inputs=(Input("input", "prediction", differentiable=True), Input("target", "target")),
                   params=(Param("seconds", "float", 0.0, "sleep", min=0.0), Param("raise", "string", "", "")),
                   description="d", example=lambda dt: {}, registry=staged)
    def sleepy_loss(input, target, *, seconds, **raising):  # type: ignore[no-untyped-def]
        time.sleep(seconds)
        if raising["raise"] == "StopIteration":
            raise StopIteration("raised by a plugin loss")
        return ((input - target) ** 2).sum()

    reg.add(dataclasses.replace(staged.get("sleepy_loss"), inline=inline))
    return reg


def _sleepy(n: int, **params: object) -> lossd_pb2.EvaluateLossRequest:
    x = np.linspace(-1, 1, n, dtype=np.float32)
    return build_request("sleepy_loss", inputs={"input": x, "target": np.zeros_like(x)}, params=params)[0]


def test_a_plugin_loss_never_runs_on_the_loop_however_small_and_idle_its_calls() -> None:
    """Found by the plugin audit: the rule counts CPU time, so a plugin loss that sleeps (or waits on I/O) held
    the event loop on every small call — every other call, health checks and a drain waited. A plugin's loss
    (unknown cost) goes to the pool from its first call; a built-in one stays on the loop."""
    pool = _Recording()
    service = LossService(_plugin_registry(), pool, torch.device("cpu"), 10**8, batch_window_us=0)
    assert service.slow_losses - NEVER == {"sleepy_loss"}

    async def calls() -> list[float]:
        replies = [await service._run(_sleepy(2, seconds=0.01)) for _ in range(SLOW_WARMUP + SLOW_IN_A_ROW + 1)]
        return [lossd_pb2.EvaluateLossResponse.FromString(r).value for r in replies]

    assert asyncio.run(calls()) == [2.0] * (SLOW_WARMUP + SLOW_IN_A_ROW + 1)  # (-1)² + 1²
    assert pool.submitted == SLOW_WARMUP + SLOW_IN_A_ROW + 1
    assert not service._inline(_sleepy(2)) and service._inline(_mse(100))
    assert LossService(_plugin_registry(inline=True), pool, torch.device("cpu"), 10**8).slow_losses - NEVER == set()


def test_a_stop_iteration_from_a_loss_on_the_pool_ends_the_call() -> None:
    """Found by the plugin audit: StopIteration cannot be raised into a Future, so a call evaluated on the
    thread pool whose loss raised it never ended (until its deadline). It is an internal error now."""
    from lossd.server.evaluation import LossCrashed

    service = LossService(_plugin_registry(), ThreadPoolExecutor(1), torch.device("cpu"), 10**8, batch_window_us=0)

    async def call() -> bytes:
        return await asyncio.wait_for(service._run(_sleepy(INLINE_MAX_BYTES, **{"raise": "StopIteration"})), 5)

    with pytest.raises(LossCrashed, match="loss sleepy_loss raised StopIteration"):
        asyncio.run(call())


def test_refused_calls_count_as_any_other() -> None:
    """A call that raises (its request refused after the work was done: a grad_output of the wrong shape, found
    once the forward had run) held the loop all the same: refused calls of two seconds each were never counted,
    and held health checks indefinitely (an audit, 2026-12-06)."""
    def refused(seconds: float) -> None:
        _burn(seconds)
        raise FieldError("grad_output", "has shape [2]; the loss has shape []")

    service = _service()
    for i in range(SLOW_WARMUP + SLOW_IN_A_ROW):
        assert "hausdorff_er_loss" not in service.slow_losses, i
        with pytest.raises(FieldError):
            service._on_loop("hausdorff_er_loss", refused, SLOW)
    assert _found(service) == {"hausdorff_er_loss"}
    for _ in range(SLOW_WARMUP):
        service._on_loop("dice_loss", _burn, FAST)
    with pytest.raises(FieldError):  # one refused call past the debt, after the warm-up: at once
        service._on_loop("dice_loss", refused, INLINE_MAX_DEBT_S + INLINE_HARD_CPU_S)
    assert _found(service) == {"hausdorff_er_loss", "dice_loss"}


def test_a_first_call_on_the_loop_however_slow_is_its_warm_up() -> None:
    """The first evaluation on the event loop's thread took 0.48 s of its CPU (torch's per-thread start), after the
    server's own warm-up on a worker thread: counting it toward the debt sent mse_loss to the pool for good,
    without the batch window (the bench: 2× the server CPU a call)."""
    service = _service()
    service._on_loop("mse_loss", _burn, INLINE_MAX_DEBT_S + INLINE_HARD_CPU_S)
    for _ in range(5):
        service._on_loop("mse_loss", _burn, FAST)
    assert _found(service) == set()


def test_losses_whose_work_outgrows_their_inputs_never_run_on_the_loop() -> None:
    """nt_xent_loss on 16 KB of [N, 1] embeddings builds a (2N)² matrix (2 s of CPU at N = 4000): such losses
    (``LossSpec.work``) are evaluated on the pool, however small the request."""
    assert {"nt_xent_loss", "info_nce_loss", "barlow_twins_loss", "linear_cross_entropy", "ctc_loss"} <= NEVER
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(16, 2)
    pooled, value = _on_pool(build_request("nt_xent_loss", x, x[::-1].copy())[0])
    assert pooled and value == float(REGISTRY.get("nt_xent_loss").fn(
        torch.from_numpy(x), torch.from_numpy(x[::-1].copy()), temperature=0.5, reduction="mean"))
