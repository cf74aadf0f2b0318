"""What a server process holds, read from ``/proc`` (Linux): memory, threads, children, CPU time.

The robustness tests measure a :class:`~support.servers.ServedProcess` from the outside with these,
so that nothing in the server has to report on itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["children", "cpu_seconds", "rss_mb", "settle", "threads", "wait_for"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def rss_mb(pid: int) -> float:
    """Resident set size (``VmRSS``) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def threads(pid: int) -> int:
    """Threads of the process now (``/proc/<pid>/task``)."""
    return len(os.listdir(f"/proc/{pid}/task"))


def children(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process (all its threads) has used."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def settle(read: Callable[[], int], target: int, timeout: float) -> int:
    """Poll ``read()`` until it is at most ``target`` or ``timeout`` passes; its last value."""
    value = read()
    deadline = time.monotonic() + timeout
    while value > target and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value
