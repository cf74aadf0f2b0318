"""What a server process holds, read from ``/proc`` (Linux): memory, threads, children, CPU time.

The robustness tests measure a :class:`~support.servers.ServedProcess` from the outside with these,
so that nothing in the server has to report on itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["alive", "children", "cpu_seconds", "listening", "rss_mb", "settle", "threads", "wait_for"]

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


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


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


def settle(read: Callable[[], float], target: float, timeout: float) -> float:
    """Poll ``read()`` until it is at most ``target`` or ``timeout`` passes; its last value.

    >>> settle(lambda: rss_mb(pid), before + 100, timeout=3.0)  # doctest: +SKIP
    """
    value = read()
    deadline = time.monotonic() + timeout
    while value > target and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


def _address(hex_address: str) -> str:
    """``/proc/net/tcp{,6}``'s ``HEX:PORT`` as ``ip:port`` (the kernel writes 32-bit words in host order)."""
    import ipaddress
    import socket
    import struct

    address, port = hex_address.split(":")
    words = struct.pack("<" + "I" * (len(address) // 8), *(int(address[i:i + 8], 16)
                                                             for i in range(0, len(address), 8)))
    if len(words) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, words)}:{int(port, 16)}"
    ip = ipaddress.IPv6Address(words)
    return f"{ip.ipv4_mapped or ip}:{int(port, 16)}"


def listening(pids: set[int] | list[int]) -> list[str]:
    """``ip:port`` of every TCP socket the processes ``pids`` hold in the LISTEN state.

    >>> listening([]) == []
    True
    """
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                found.append(_address(fields[1]))
    return found
