"""Soak: 16 concurrent clients against a ``python -m lossd.server`` on 127.0.0.1, each on its own
channel, calling EvaluateLoss, EvaluateLossStream, ListLosses and health in a loop: zero failed
calls, every value right, and the server's resident memory grows by less than 5 % once warm.

Bounded in time and count: the default suite runs 3 s (after 1 s of warm-up); ``make soak``
(``LOSSD_SOAK=1``) 60 s after 10 s of warm-up; ``LOSSD_SOAK_SECONDS`` overrides the duration.
Each client makes at most :data:`MAX_CALLS` calls.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lossd.client import build_request
from lossd.v1 import lossd_pb2, lossd_pb2_grpc
from support.procstat import rss_mb
from support.servers import ServedProcess

pytestmark = pytest.mark.slow

SOAK = os.environ.get("LOSSD_SOAK", "") not in ("", "0")
SECONDS = float(os.environ.get("LOSSD_SOAK_SECONDS", "60" if SOAK else "3"))
WARM_UP_S = 10.0 if SOAK else 1.0
CLIENTS = 16
MAX_CALLS = 200_000  # per client
RSS_GROWTH = 0.05


def _cases() -> list[tuple[lossd_pb2.EvaluateLossRequest, float]]:
    """Requests of a few losses and sizes, with what local torch says their value is."""
    rng = np.random.default_rng(0)
    cases = []
    for n in (8, 256, 4096):
        x, y = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
        cases.append((build_request("mse", x, y)[0],
                      torch.nn.functional.mse_loss(torch.from_numpy(x), torch.from_numpy(y)).item()))
        logits, target = rng.standard_normal((n // 8, 8)).astype(np.float32), rng.integers(0, 8, n // 8)
        cases.append((build_request("cross_entropy", logits, target)[0],
                      torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(target)).item()))
        p, t = rng.uniform(0.01, 0.99, n).astype(np.float32), rng.integers(0, 2, n).astype(np.float32)
        cases.append((build_request("binary_cross_entropy", p, t)[0],
                      torch.nn.functional.binary_cross_entropy(torch.from_numpy(p), torch.from_numpy(t)).item()))
    return cases


@dataclass
class Tally:
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, calls: int, failures: list[str]) -> None:
        with self.lock:
            self.calls += calls
            self.failures.extend(failures)


def _client(address: str, k: int, until: float, tally: Tally,
            cases: list[tuple[lossd_pb2.EvaluateLossRequest, float]]) -> None:
    calls, failures = 0, []
    with grpc.insecure_channel(address) as channel:
        stub = lossd_pb2_grpc.LossServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < until and calls < MAX_CALLS:
            i = (calls + k) % (len(cases) + 3)
            try:
                if i < len(cases):
                    request, value = cases[i]
                    reply = stub.EvaluateLoss(request, timeout=30)
                    if abs(reply.value - value) > 1e-5 * max(1.0, abs(value)):
                        failures.append(f"{request.loss}: {reply.value} != {value}")
                elif i == len(cases):
                    items = [lossd_pb2.EvaluateLossStreamRequest(id=str(j), request=cases[j][0]) for j in range(4)]
                    replies = list(stub.EvaluateLossStream(iter(items), timeout=30))
                    for j, r in enumerate(replies):
                        if r.id != str(j) or abs(r.response.value - cases[j][1]) > 1e-5 * max(1.0, abs(cases[j][1])):
                            failures.append(f"stream item {j}: {r}")
                elif i == len(cases) + 1:
                    if len(stub.ListLosses(lossd_pb2.ListLossesRequest(filter="mse"), timeout=30).losses) < 1:
                        failures.append("ListLosses found no mse")
                else:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=30).status
                    if status != health_pb2.HealthCheckResponse.SERVING:
                        failures.append(f"health {status}")
            except grpc.RpcError as e:
                failures.append(f"{e.code()}: {e.details()}")
            calls += 1
    tally.add(calls, failures)


def _run(address: str, seconds: float) -> Tally:
    tally, cases = Tally(), _cases()
    until = time.monotonic() + seconds
    workers = [threading.Thread(target=_client, args=(address, k, until, tally, cases)) for k in range(CLIENTS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + 120)
    assert not any(w.is_alive() for w in workers), "a client hung"
    return tally


def test_soak_16_clients(robust_server: ServedProcess, capsys: pytest.CaptureFixture[str]) -> None:
    pid = robust_server.proc.pid
    warm = _run(robust_server.address, WARM_UP_S)
    assert not warm.failures, warm.failures[:10]
    before = rss_mb(pid)
    tally = _run(robust_server.address, SECONDS)
    after = rss_mb(pid)
    with capsys.disabled():
        print(f"\nsoak: {CLIENTS} clients, {SECONDS:.0f} s: {tally.calls} calls ({tally.calls / SECONDS:.0f}/s), "
              f"{len(tally.failures)} failed; server RSS {before:.1f} -> {after:.1f} MiB")
    assert tally.failures == [], tally.failures[:10]
    assert tally.calls > CLIENTS, tally.calls
    assert after <= before * (1 + RSS_GROWTH), f"server RSS {before:.1f} -> {after:.1f} MiB"
    assert robust_server.proc.poll() is None
