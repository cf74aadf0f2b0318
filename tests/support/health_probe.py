"""Health-check latency measured from a process of its own, while a test sends other calls.

A probe thread in the test's process would time the test's own work too (a 100 MB message being
sent holds that process's GIL), so :class:`HealthProbe` runs ``python health_probe.py ADDRESS``:
it checks health every 5 ms until its stdin closes, then prints one line per check,
``<monotonic start> <seconds> <status>`` (CLOCK_MONOTONIC is the same clock in every process of
the machine, so a slow check can be matched to what the test was sending at that moment)::

    with HealthProbe(address) as probe:
        ...  # the calls under test
    checks = probe.checks  # [(start, seconds, status name), ...]
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

__all__ = ["HealthProbe", "p99"]


class HealthProbe:
    """Start the probe process; :attr:`checks` is filled when the ``with`` block ends."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.checks: list[tuple[float, float, str]] = []
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> HealthProbe:
        self._proc = subprocess.Popen([sys.executable, str(Path(__file__)), self.address], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        ready = self._proc.stdout.readline()  # after its first (connecting) check
        assert ready.strip() == "ready", f"health probe did not start: {ready!r}"
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._proc is not None
        out, _ = self._proc.communicate("", timeout=60)
        for line in out.splitlines():
            start, seconds, status = line.split()
            self.checks.append((float(start), float(seconds), status))


def p99(latencies: list[float]) -> float:
    """The 99th percentile (nearest rank) of ``latencies``.

    >>> p99([0.001] * 99 + [1.0]), p99([0.001] * 98 + [1.0, 1.0])
    (0.001, 1.0)
    """
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, -(-99 * len(ordered) // 100) - 1)]


def _main(address: str) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    lines = []
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        print("ready", flush=True)
        while not stop.is_set():
            start = time.monotonic()
            status = stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status
            lines.append(f"{start:.6f} {time.monotonic() - start:.6f} "
                         f"{health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
            time.sleep(0.005)
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1])
