"""The torch reference of the wire table (:func:`._workloads.local_loop`), in a process of its own.

The wire table samples the same forward and backward without gRPC in turn with the calls. Run in
the bench's own process, its tensors (torch's 64-byte-aligned blocks, 40 MB each at 10^7 elements)
fragmented the heap that the client's requests and replies (80 MB each) come from, and the heap
grew for dozens of rounds: ``Client.evaluate`` paid 19,531 fresh page faults (20 to 40 ms) in 3 to 5
of 40 calls at 10^7 in one series, which a client process that does not also run torch on such
tensors does not pay (alone, or beside the echo, it paid them in its first call only). Here the reference keeps a
heap of its own, set up as the bench's (OpenMP's wait policy from the environment, the same malloc
tuning). Each call is timed here and the time sent back (:class:`._measure.Timed`), so the pipe's
round trip is not counted.

Protocol, one line each way: ``LOSS N`` makes that workload (answer ``ready``); ``run`` runs it
once (answer: its seconds). Run: ``python -m bench._reference [--no-malloc-tuning]``.

>>> with Reference.start() as reference:  # doctest: +SKIP
...     reference.use("mse_loss", 100)
...     seconds = reference()
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

from lossd._malloc import tune_malloc
from lossd.server._openmp import quiet_openmp

from ._measure import REPO, Timed
from ._workloads import local_loop, workload

__all__ = ["Reference", "main"]


class Reference:
    """The reference process: :meth:`use` a workload, then call it for one timed evaluation."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._proc = proc

    @classmethod
    @contextlib.contextmanager
    def start(cls, malloc_tuning: bool = True) -> Iterator[Reference]:
        """Start ``python -m bench._reference``; it ends with the block."""
        cmd = [sys.executable, "-m", "bench._reference", *([] if malloc_tuning else ["--no-malloc-tuning"])]
        proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        try:
            yield cls(proc)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()  # its loop ends at the end of its input
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _ask(self, line: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(line + "\n")
        answer = self._proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the bench's reference process ended (exit code {self._proc.wait()})")
        return answer.strip()

    def use(self, loss: str, n: int) -> None:
        """Make :func:`~._workloads.workload` ``(loss, n)`` the one that calls run."""
        self._ask(f"{loss} {n}")

    def __call__(self) -> Timed:
        """One forward and backward of the workload, timed in the reference process."""
        return Timed(self._ask("run"))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._reference")
    parser.add_argument("--no-malloc-tuning", action="store_true")
    args = parser.parse_args()
    if not args.no_malloc_tuning:
        tune_malloc()
    quiet_openmp()  # as the bench's process does, before torch loads (local_loop imports it)
    run = None
    for line in sys.stdin:
        words = line.split()
        if words == ["run"] and run is not None:
            start = time.perf_counter()
            run()
            print(time.perf_counter() - start, flush=True)
        elif len(words) == 2:
            run = None  # the last workload's tensors go before the next one's are made
            run = local_loop(workload(words[0], int(words[1])))
            print("ready", flush=True)
        else:
            raise SystemExit(f"bench._reference: cannot read {line!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
