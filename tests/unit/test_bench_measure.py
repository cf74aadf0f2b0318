"""The bench's per-thread CPU split (``bench._measure.thread_cpu_seconds``) puts work where it ran."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, where bench/ lives

from bench._measure import cpu_seconds, thread_cpu_seconds  # noqa: E402


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_thread_cpu_counts_the_main_thread_as_the_loop_and_the_rest_as_other():
    pid = os.getpid()
    before = thread_cpu_seconds(pid)
    burned, done = threading.Event(), threading.Event()
    # a thread that ended is no longer listed, so this one stays until the sample is taken
    burner = threading.Thread(target=lambda: (_burn(0.3), burned.set(), done.wait(10)))
    burner.start()
    try:
        _burn(0.3)  # on the main thread
        assert burned.wait(10)
        after = thread_cpu_seconds(pid)
    finally:
        done.set()
        burner.join()
    assert after["loop"] - before["loop"] >= 0.25
    assert after["other"] - before["other"] >= 0.25
    assert sum(after.values()) <= cpu_seconds(pid) + 0.02
