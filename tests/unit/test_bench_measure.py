"""The bench's measuring helpers: the per-thread CPU split puts work where it ran; a contender timed
in another process (the torch reference) is sampled as it measured itself."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, where bench/ lives

from bench._measure import Timed, cpu_seconds, interleaved, thread_cpu_seconds  # noqa: E402
from bench._reference import Reference  # noqa: E402


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


def test_interleaved_samples_a_contender_that_timed_itself_as_its_own_seconds():
    samples = interleaved({"timed": lambda: Timed(2.5), "untimed": lambda: time.sleep(0.002)}, reps=3)
    assert samples["timed"] == [2.5, 2.5, 2.5]
    assert all(0.002 <= s < 2.5 for s in samples["untimed"])


def test_the_torch_reference_runs_the_workload_in_a_process_of_its_own():
    with Reference.start() as reference:
        reference.use("mse_loss", 10**6)
        first = reference()
        reference.use("cross_entropy", 10**3)
        second = reference()
    assert isinstance(first, Timed) and isinstance(second, Timed)
    assert 0 < first < 10 and 0 < second < 10
    assert reference._proc.returncode == 0  # the end of its input ended it
