"""``python -m bench._load ADDRESS CLIENTS SECONDS WHAT``: load a server from a process of its own.

``CLIENTS`` threads, each with its own ``Client`` (channel), call back to back for
``SECONDS``: ``evaluate`` (``Client.evaluate``, mse_loss on 100 float32 elements) or
``echo`` (the bench echo of the same request size). Prints one JSON object: calls/s,
p50 and p99 in ms, and this process's CPU ms per call. The ``processes`` section runs
it so that the client does not share a process (and a GIL) with the servers or the bench.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["load", "main"]


def load(address: str, clients: int, seconds: float, what: str) -> dict[str, Any]:
    """Run the load (see the module docstring) and return its figures."""
    from lossd.client import Client, build_request

    from ._measure import percentile
    from ._echo import ECHO, echo_payload
    from ._workloads import workload

    w = workload("mse_loss", 100)
    conns = [Client(address, timeout=60) for _ in range(clients)]
    if what == "echo":
        size = len(build_request(w.loss, w.y_pred, w.y_true)[0].SerializeToString())
        payload = echo_payload(size, size)
        calls: list[Callable[[], object]] = [functools.partial(c.channel.unary_unary(ECHO), payload) for c in conns]
    else:
        calls = [functools.partial(c.evaluate, w.loss, w.y_pred, w.y_true) for c in conns]
    for call in calls:
        call()
    latencies: list[list[float]] = [[] for _ in conns]
    barrier = threading.Barrier(clients + 1)
    stop = [0.0]

    def worker(i: int) -> None:
        barrier.wait()
        while time.perf_counter() < stop[0]:
            t0 = time.perf_counter()
            calls[i]()
            latencies[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop[0] = time.perf_counter() + seconds
    start, cpu = time.perf_counter(), time.process_time()
    barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    flat = [x for lat in latencies for x in lat]
    for c in conns:
        c.close()
    return {"what": what, "clients": clients, "calls": len(flat), "calls_per_s": len(flat) / elapsed,
            "p50_ms": percentile(flat, 50) * 1e3, "p99_ms": percentile(flat, 99) * 1e3,
            "client_cpu_ms_per_call": (time.process_time() - cpu) / len(flat) * 1e3}


def main(argv: list[str] | None = None) -> int:
    address, clients, seconds, what = (argv or sys.argv[1:])[:4]
    print(json.dumps(load(address, int(clients), float(seconds), what)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
