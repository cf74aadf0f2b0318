"""EvaluateLoss replicas: one Client balanced over real ``lossd serve`` processes, and failover.

Four servers (``python -m lossd.server``, each with its own ``--data-dir``, JSON
access logs) serve ``Client``s that name two of them. The access logs say which
replica served each call, and ``attempt`` (from gRPC's
``grpc-previous-rpc-attempts`` header) which calls gRPC's retries sent again.

- Every way to name several targets balances ``round_robin`` over both.
- A request above gRPC's default 256 KiB retry buffer is retried (gated server).
- A replica killed while it computes an evaluation (held at a gate the test never opens,
  support/gated_loss.py): the call moves on (lossd sends no response headers before the
  reply, so gRPC has not committed it).
- A replica drained by SIGTERM leaves the rotation (client-side health checking).
- 1,000 evaluations from 4 threads; at call 500 one replica is stopped (SIGSTOP,
  so calls pile up in flight on it: progress halts only once every thread waits
  on it), then killed with SIGKILL. Every call must succeed with the value and
  gradients of local torch, the calls in flight on the dead replica must reappear
  on the survivor as second attempts, and none may be sent to the dead one
  afterwards. Streams (``EvaluateLossStream``) are not retried by gRPC
  (docs/scaling.md): the test opens them after the failover only, where they must
  go to the survivor.

The last three tests each end one replica, so they come last, in this order.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support.gated import RefuseFirst, start_gated
from support.gated_loss import LossGate
from support.procstat import wait_for
from support.servers import ServedProcess

from lossd.client import Client, EvaluateResult, Unavailable, build_request
from lossd.v1 import lossd_pb2_grpc

EVALUATE = "/lossd.v1.LossService/EvaluateLoss"
THREADS, PER_THREAD = 4, 250
DRAIN_CALLS = 40  # calls made while a draining replica's gated call holds its drain open
BIG = 70_000  # float32 elements per input: a 560 KB request, above gRPC's default 256 KiB retry buffer
#: Each replica's gate (its ``gated_mse_loss`` computes once the test opens it), by address.
GATES: dict[str, LossGate] = {}


def gated_value() -> float:
    """What local torch says the loss of :meth:`LossGate.request` is."""
    a = {k: torch.from_numpy(v) for k, v in LossGate.arrays().items()}
    return F.mse_loss(a["input"], a["target"]).item()


def served_calls(proc: ServedProcess) -> Counter[tuple[str, int]]:
    """EvaluateLoss access lines of one replica by (status, attempt)."""
    counts: Counter[tuple[str, int]] = Counter()
    for line in "".join(proc.log).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("logger") == "lossd.access" and record.get("method") == "EvaluateLoss":
            counts[(record["status"], record.get("attempt", 1))] += 1
    return counts


def settled(proc: ServedProcess, expected: int, timeout: float = 10) -> Counter[tuple[str, int]]:
    """The access counts once at least ``expected`` lines arrived (the reader thread is async)."""
    deadline = time.monotonic() + timeout
    counts = served_calls(proc)
    while sum(counts.values()) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        counts = served_calls(proc)
    return counts


def warm_both(client: Any, servers: Sequence[ServedProcess], timeout: float = 30) -> None:
    """Call until every one of ``servers`` has served one of ``client``'s calls: each subchannel is READY,
    so round_robin's next picks alternate (a fixed count of warm-up calls assumed it)."""
    before = [sum(served_calls(p).values()) for p in servers]
    deadline = time.monotonic() + timeout
    while True:
        client.evaluate("mse", [1.0], [0.0])
        if all(sum(settled(p, n + 1, 0.5).values()) > n for p, n in zip(servers, before)):
            return
        assert time.monotonic() < deadline, "a replica served none of the warm-up calls"


@contextlib.contextmanager
def replicas(tmp: Path, n: int = 2) -> Iterator[list[ServedProcess]]:
    """``n`` servers, each with its own working and data directory, logging JSON access lines,
    serving ``gated_mse_loss`` behind its own gate (``GATES[address]``); started side by side
    (most of a start is importing torch)."""
    managers, gates = [], []
    for i in range(n):
        (tmp / f"r{i}").mkdir()
        gates.append(LossGate(tmp / f"r{i}"))
        managers.append(ServedProcess.start(tmp / f"r{i}", "--data-dir", str(tmp / f"r{i}" / "data"),
                                            "--log-format", "json", env=gates[-1].env))
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(m.__enter__) for m in managers]
        for m, f in zip(managers, futures):
            if f.exception() is None:
                stack.push(m.__exit__)  # stopped on exit, also when another one failed to start
        procs = [f.result() for f in futures]
        GATES.update((p.address, g) for p, g in zip(procs, gates))
        yield procs


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServedProcess]]:
    """Four replicas: the first two serve every test; the last three tests each end one."""
    with replicas(tmp_path_factory.mktemp("replicas"), 4) as procs:
        yield procs


# --- one evaluation and its local torch reference ------------------------------------------


@dataclass
class Case:
    loss: str
    args: tuple[Any, ...]
    params: dict[str, Any] = field(default_factory=dict)

    def expected(self) -> tuple[float, np.ndarray]:
        y_pred = torch.tensor(self.args[0], requires_grad=True)
        y_true = torch.tensor(self.args[1])
        fn = {"mse": F.mse_loss, "l1": F.l1_loss, "cross_entropy": F.cross_entropy}[self.loss]
        value = fn(y_pred, y_true, **self.params)
        value.backward()
        assert y_pred.grad is not None
        return value.item(), y_pred.grad.numpy()

    def check(self, result: EvaluateResult) -> None:
        value, grad = self.expected()
        # float32 sums over 70,000 elements may split differently over the server's threads
        assert result.value == pytest.approx(value, rel=1e-6, abs=0), self.loss
        np.testing.assert_array_equal(result.grads["y_pred"], grad)


def case(rng: np.random.Generator, i: int, big: bool) -> Case:
    if big:
        return Case("mse", (rng.standard_normal(BIG, np.float32), rng.standard_normal(BIG, np.float32)))
    if i % 3 == 0:
        return Case("cross_entropy", (rng.standard_normal((8, 5), np.float32), rng.integers(0, 5, 8)),
                    {"label_smoothing": 0.1})
    loss = "mse" if i % 3 == 1 else "l1"
    return Case(loss, (rng.standard_normal(16, np.float32), rng.standard_normal(16, np.float32)))


# --- balancing: every way to name several replicas ------------------------------------------


@pytest.mark.parametrize("form", ["list", "comma", "ipv4", "env"])
def test_every_target_form_balances_over_both(servers: list[ServedProcess], form: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = servers[:2]
    before = [sum(served_calls(p).values()) for p in servers[:2]]
    target: Any = {"list": [a.address, b.address], "comma": f"{a.address},{b.address}",
                   "ipv4": f"ipv4:{a.address},{b.address}", "env": None}[form]
    if form == "env":
        monkeypatch.setenv("LOSSD_TARGET", f"{a.address}, {b.address}")
    rng = np.random.default_rng(7)
    with Client(target) as client:
        assert client.target == f"ipv4:{a.address},{b.address}"
        assert client.config.service_config()["loadBalancingConfig"] == [{"round_robin": {}}]
        for i in range(40):
            c = case(rng, i, big=False)
            c.check(client.evaluate(c.loss, *c.args, **c.params))
    deadline = time.monotonic() + 10
    while True:  # access lines reach the log through each server's reader thread
        served = [sum(served_calls(p).values()) - n for p, n in zip(servers[:2], before)]
        if sum(served) >= 40 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sum(served) == 40 and min(served) >= 10, served


def test_dns_target_uses_round_robin(servers: list[ServedProcess]) -> None:
    """A ``dns:///`` name balances round_robin over what it resolves to. Here ``localhost`` is
    one address (127.0.0.1 on this machine; two replicas would need two A/AAAA records), so
    this checks the configuration and the call, not the spread."""
    port = servers[0].address.rpartition(":")[2]
    with Client(f"dns:///localhost:{port}") as client:
        assert client.config.service_config()["loadBalancingConfig"] == [{"round_robin": {}}]
        assert client.evaluate("mse", [3.0], [1.0]).value == 4.0
        assert client.health() == "SERVING"
    resolved = {info[4][0] for info in socket.getaddrinfo("localhost", int(port), type=socket.SOCK_STREAM)}
    assert "127.0.0.1" in resolved


# --- retries of large requests --------------------------------------------------------------


def test_a_large_request_is_retried() -> None:
    """gRPC retries only while it holds the whole request: 256 KiB unless raised. The SDK raises
    it to ``max_message_bytes``, so a 560 KB EvaluateLoss refused UNAVAILABLE is sent again;
    with gRPC's default the same call fails after one attempt."""
    rng = np.random.default_rng(3)
    c = case(rng, 0, big=True)
    gate = RefuseFirst(1)
    with start_gated([gate]) as address:
        with Client(address) as client:
            c.check(client.evaluate(c.loss, *c.args))
        assert gate.calls[EVALUATE] == 2
        gate.calls.clear()
        with Client(address, options=[("grpc.per_rpc_retry_buffer_size", 256 * 1024)]) as client:
            with pytest.raises(Unavailable):
                client.evaluate(c.loss, *c.args)
        assert gate.calls[EVALUATE] == 1


@pytest.mark.slow
def test_a_call_killed_mid_evaluation_moves_on(servers: list[ServedProcess]) -> None:
    """gRPC retries a call only until response headers arrive; lossd's unary handlers send none
    before the reply. So a replica killed while it computes leaves the call retryable: two
    evaluations go out together (round_robin: one per replica); the third replica's waits at its
    gate, which the test never opens, and the replica is killed once it has started computing
    it; both calls return the value of local torch, one as a second attempt on the survivor
    (whose gate is open). Kills the module's third replica."""
    victim, survivor = servers[2], servers[1]
    gate = GATES[victim.address]
    GATES[survivor.address].open()
    expected = gated_value()
    with Client([victim.address, survivor.address]) as client:
        warm_both(client, [victim, survivor])  # both subchannels connected, so the next two picks differ
        before = served_calls(survivor)
        results: list[Any] = [None, None]

        def slow(i: int) -> None:
            try:
                results[i] = client.evaluate_request(gate.request(), timeout=120).value
            except Exception as e:  # reported below
                results[i] = e

        threads = [threading.Thread(target=slow, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        # Killed while it computes (it waits at the gate), not while the request travels.
        assert gate.wait_entered(30), "the victim never started its evaluation"
        os.kill(victim.proc.pid, signal.SIGKILL)
        for t in threads:
            t.join(120)
    # float32 sums over 16,384 elements may split differently over the server's threads
    assert results == [pytest.approx(expected, rel=1e-6, abs=0)] * 2, (results, expected)
    assert victim.proc.wait(10) == -signal.SIGKILL
    # The retried call's access line: waited for by itself (warm-up lines may still be arriving, so the
    # survivor's line count does not tell when the retry's line has arrived).
    assert wait_for(lambda: (served_calls(survivor) - before)[("OK", 2)] >= 1, 10), served_calls(survivor) - before
    assert (served_calls(survivor) - before)[("OK", 2)] == 1, served_calls(survivor) - before


@pytest.mark.slow
def test_a_draining_replica_leaves_the_rotation(servers: list[ServedProcess]) -> None:
    """SIGTERM: the replica refuses new calls (UNAVAILABLE) and reports NOT_SERVING while a long
    call finishes. Clients watch each server's health (healthCheckConfig), so round_robin stops
    picking it within moments instead of having half the calls refused and retried. Kills the
    module's fourth replica."""
    victim, survivor = servers[3], servers[1]
    gate = GATES[victim.address]
    with grpc.insecure_channel(victim.address) as pinned:
        stub = lossd_pb2_grpc.LossServiceStub(pinned)
        before = [served_calls(victim), served_calls(survivor)]
        with Client([victim.address, survivor.address]) as client:
            warm_both(client, [victim, survivor])
            before = [served_calls(victim), served_calls(survivor)]
            slow = stub.EvaluateLoss.future(gate.request(), timeout=120)  # keeps the drain open
            # SIGTERM once the victim computes the call (it waits at the gate), not while it travels.
            assert gate.wait_entered(30), "the pinned evaluation did not start"
            os.kill(victim.proc.pid, signal.SIGTERM)
            failures: list[str] = []
            calls = 0

            def call() -> None:
                nonlocal calls
                try:
                    assert client.evaluate("mse", [2.0], [0.0]).value == 4.0
                except Exception as e:
                    failures.append(repr(e))
                calls += 1

            for _ in range(DRAIN_CALLS):  # while the drain is held open by the gated call
                call()
            assert victim.proc.poll() is None and not slow.done(), "the drain ended before its call"
            gate.open()
            while victim.proc.poll() is None and calls < 5000:
                call()
        assert slow.result().HasField("loss"), "the call in flight was not let finish"
    assert victim.proc.wait(30) == 0
    assert failures == [], failures[:3]
    refused = (settled(victim, 1) - before[0])[("UNAVAILABLE", 1)]
    served = settled(survivor, sum(before[1].values()) + calls) - before[1]
    # Without health checking, 11 of 27 calls during the drain were refused (and retried).
    assert refused <= 3 and served[("OK", 2)] == refused, (refused, served, calls)


# --- failover -------------------------------------------------------------------------------


@pytest.mark.slow
def test_1000_evaluations_survive_a_replica_killed_halfway(servers: list[ServedProcess]) -> None:
    """Kills the module's first replica: the last test of this module."""
    victim, survivor = servers[:2]
    before = [served_calls(p) for p in (victim, survivor)]
    with Client([victim.address, survivor.address]) as client:
        lock = threading.Lock()
        done = [0]
        halfway = threading.Event()
        failures: list[str] = []

        def work(k: int) -> None:
            rng = np.random.default_rng(100 + k)
            for i in range(PER_THREAD):
                c = case(rng, i, big=k == 0)  # thread 0 sends requests above 256 KiB
                try:
                    c.check(client.evaluate(c.loss, *c.args, **c.params))
                except Exception as e:  # counted, not raised: every failure shows in the message
                    failures.append(f"thread {k} call {i}: {e!r}")
                with lock:
                    done[0] += 1
                    if done[0] == THREADS * PER_THREAD // 2:
                        halfway.set()

        threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
        for t in threads:
            t.start()
        assert halfway.wait(120), "the first 500 calls did not finish"
        os.kill(victim.proc.pid, signal.SIGSTOP)
        # Calls still go to the stopped replica (its connection is up) and wait there. Progress
        # halts once every thread waits on it: then THREADS calls are in flight on it.
        stopped, last = time.monotonic(), -1
        while time.monotonic() - stopped < 60:
            with lock:
                now = done[0]
            if now == last:
                break
            last = now
            time.sleep(1.0)
        os.kill(victim.proc.pid, signal.SIGKILL)
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        # A call whose reply had begun to arrive when the replica stopped has committed and is not
        # retried (docs/scaling.md, "What a retry can save"): only thread 0's replies (above 256 KiB,
        # several HTTP/2 flow-control windows) take long enough on the wire to be caught so, and only
        # its one call in flight. Every other call moves on (CI once: thread 0, call 56, "Stream removed
        # (recvmsg:Connection reset by peer)").
        committed = [f for f in failures if f.startswith("thread 0 call ") and "Unavailable(" in f]
        assert len(committed) <= 1 and failures == committed, failures[:5]
        assert done[0] == THREADS * PER_THREAD

        # New streams go to the survivor (a stream open on the dead replica would raise Unavailable).
        rng = np.random.default_rng(9)
        items = [case(rng, i, big=False) for i in range(20)]
        outcomes = client.evaluate_many([build_request(c.loss, *c.args, **c.params)[0] for c in items])
        for c, r in zip(items, outcomes):
            assert isinstance(r, EvaluateResult), r
            c.check(r)

        assert victim.proc.wait(10) == -signal.SIGKILL
        first = settled(victim, 1) - before[0]
        second = settled(survivor, sum(before[1].values()) + THREADS * PER_THREAD - sum(first.values())) - before[1]
        # Both served a substantial share; the victim's in-flight calls were never logged there.
        assert set(first) == {("OK", 1)} and first[("OK", 1)] >= 150, first
        retried = second[("OK", 2)]
        assert set(second) <= {("OK", 1), ("OK", 2)}, second
        assert second[("OK", 1)] >= 450, second
        # Every call in flight on the dead replica moved on once; none was sent there afterwards.
        assert THREADS <= retried <= 2 * THREADS, second
        # Each call is logged once where it was answered, give or take the victim's last ones: a
        # reply sent just before SIGSTOP has its access line written after it (never, once killed).
        total = first[("OK", 1)] + second[("OK", 1)] + retried
        assert abs(total - THREADS * PER_THREAD) <= THREADS, (first, second)
