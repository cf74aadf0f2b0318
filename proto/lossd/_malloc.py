"""glibc malloc settings for processes that move large tensors.

By default glibc serves every allocation above a threshold (128 KiB, rising
to at most 32 MiB) with a fresh ``mmap`` and returns it to the kernel on
``free``. A 10**7-element float32 tensor is 40 MB, above any threshold, so
every request, reply, decoded tensor and gradient of that size gets fresh
pages, and the first touch of each 4 KiB page is a page fault: on a small
cloud VM that costs more than moving the bytes (an 80 MB gRPC echo over
loopback took 420 ms untuned and 179 ms tuned, a 10**7-element mse_loss
evaluation 605 ms and 212 ms; docs/performance.md).

:func:`tune_malloc` makes glibc keep freed memory for reuse instead:

- ``M_MMAP_MAX = 0``: no mmap'd chunks; large blocks come from the heap;
- ``M_TRIM_THRESHOLD`` = 1 GiB: freed heap memory is not handed back until
  more than that is free at the top;
- ``M_ARENA_MAX = 1``: every thread allocates from the main (``brk``) heap,
  since other arenas are capped at 64 MiB per heap and fall back to mmap
  for anything larger.

The cost: the process keeps its peak heap (up to the trim threshold) after a
large request, rather than returning it. ``lossd serve`` applies this at
start unless ``--no-malloc-tuning`` / ``LOSSD_MALLOC_TUNING=0``; a client
process sending large tensors can call it too. It must run before other
threads start allocating (an arena that exists stays), and the environment
variables ``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_ARENA_MAX`` do the same from outside.

>>> tune_malloc() in (True, False)   # False on a platform without glibc
True
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["MALLOC_SETTINGS", "tune_malloc"]

# mallopt() parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

#: What :func:`tune_malloc` sets, as the equivalent environment variables.
MALLOC_SETTINGS = {
    "MALLOC_MMAP_MAX_": 0,
    "MALLOC_TRIM_THRESHOLD_": 1 << 30,
    "MALLOC_ARENA_MAX": 1,
}


def tune_malloc() -> bool:
    """Apply :data:`MALLOC_SETTINGS` to this process with ``mallopt``.

    Returns whether they were applied: False where the C library is not
    glibc (macOS, musl/Alpine), which keeps its own behaviour.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = (
        (_M_MMAP_MAX, MALLOC_SETTINGS["MALLOC_MMAP_MAX_"]),
        (_M_TRIM_THRESHOLD, MALLOC_SETTINGS["MALLOC_TRIM_THRESHOLD_"]),
        (_M_ARENA_MAX, MALLOC_SETTINGS["MALLOC_ARENA_MAX"]),
    )
    return all(mallopt(param, value) == 1 for param, value in settings)
