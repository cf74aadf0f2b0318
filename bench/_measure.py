"""Timing and process helpers for the benchmarks: servers, samples, percentiles, RSS."""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REPO", "BenchServer", "Timed", "cpu_seconds", "interleaved", "percentile", "proc_status_kib", "summary",
           "thread_cpu_seconds"]

REPO = Path(__file__).resolve().parents[1]


@dataclass
class BenchServer:
    """A server subprocess (``python -m bench._server`` or ``python -m lossd.server``)."""

    proc: subprocess.Popen[str]
    address: str
    #: The bare echo server's address (the bench server prints it); else ``address``.
    echo_address: str = ""

    def __post_init__(self) -> None:
        self.echo_address = self.echo_address or self.address

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    @contextlib.contextmanager
    def start(cls, *args: str, module: str = "bench._server", env: Mapping[str, str] | None = None,
              python: str = sys.executable, repo: Path = REPO) -> Iterator[BenchServer]:
        """Start ``python -m module args`` in ``repo`` (another checkout: ``bench._compare``)."""
        cmd = [python, "-m", module, *args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "LOSSD_DEVICE": "cpu", **(env or {})}
        proc = subprocess.Popen(cmd, cwd=repo, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        assert proc.stdout is not None
        address = echo = None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            m = re.fullmatch(r"(\d+)(?: (\d+))?\n", line)
            if m and m.group(2):
                echo = f"127.0.0.1:{m.group(2)}"
            m = m or re.search(r"listening on \S+:(\d+)", line)
            if m:
                address = f"127.0.0.1:{m.group(1)}"
                break
        if address is None:
            proc.kill()
            raise RuntimeError(f"{' '.join(cmd)} did not start:\n{''.join(seen)}")
        try:
            yield cls(proc, address, echo or "")
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def proc_status_kib(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` figure in KiB (``VmRSS``, ``VmHWM``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU time a process's threads have used so far, by role: ``loop`` (the main thread,
    where the server's event loop runs), ``grpc`` (gRPC's own threads, named ``event_engine``...) and
    ``other`` (everything else: the evaluation pool and torch's OpenMP workers, which carry no names the
    kernel sees). Threads that ended are not counted."""
    out = {"loop": 0.0, "grpc": 0.0, "other": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:  # ended meanwhile
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        role = "loop" if int(tid) == pid else "grpc" if name.startswith(("event_engine", "grpc")) else "other"
        out[role] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


class Timed(float):
    """Seconds a contender of :func:`interleaved` measured itself (a call run in another process,
    whose round trip to it is not part of the sample)."""


def interleaved(calls: Mapping[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call for each of ``calls``, sampled in turn (A, B, C, A, B, C, ...)
    so that load on the machine affects every contender alike; a call that returns
    :class:`Timed` seconds is sampled as those.

    >>> samples = interleaved({"timed": lambda: Timed(2.0), "sleep": lambda: time.sleep(0.001)}, reps=2)
    >>> samples["timed"], all(s >= 0.001 for s in samples["sleep"])
    ([2.0, 2.0], True)
    """
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    out: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, fn in calls.items():
            start = time.perf_counter()
            result = fn()
            elapsed = time.perf_counter() - start
            out[name].append(float(result) if isinstance(result, Timed) else elapsed)
    return out


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank."""
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Median, p10 and p90 of ``samples`` in milliseconds."""
    return {
        "median_ms": statistics.median(samples) * 1e3,
        "p10_ms": percentile(samples, 10) * 1e3,
        "p90_ms": percentile(samples, 90) * 1e3,
        "n": len(samples),
    }
