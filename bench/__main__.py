"""``python -m bench`` (``make bench``): lossd's performance, side by side, in one run.

Sections (all by default; ``--only wire,memory`` picks some):

- ``wire``: EvaluateLoss next to a bare gRPC echo of the same bytes, through
  the same server process (10^2 ... 10^7 float32; mse_loss, cross_entropy);
- ``encodings``: raw bytes vs ``values`` numbers;
- ``concurrency``: 1, 4, 16 concurrent clients (calls/s, p50, p99);
- ``memory``: server peak RSS during a 10^7 evaluation;
- ``malloc``: what the server's malloc tuning buys;
- ``training``: a TrainJob's samples/s at world_size 1 and 2 (data-parallel ranks), and the ratio;
- ``processes``: the ``--processes`` prototype, 1 and 2 server processes sharing one port
  (SO_REUSEPORT), loaded from a client process of its own;
- ``replicas``: submit → first event and submit → RUNNING of a small TrainJob with 1 and 3 replicas on a
  PostgreSQL job store (skipped, saying why, without PostgreSQL's binaries);
- ``batch``: EvaluateLossBatch (``evaluate_many``, 10,000 × mse_loss 100) vs an in-process torch
  loop, and the batch window (``--batch-window-us``) at 1 and 16 clients (``bench/_batch.py``).

A new section adds its run here, its target rows to ``_report.TARGETS`` and its
table to ``_report.TABLES``.

It writes ``bench/results/latest.json`` and ``latest.md`` and rewrites the
results part of ``docs/performance.md`` (``--no-docs``: leave it).
``--quick`` runs small sizes and few repetitions (a smoke test, ~1 minute).
The bench client process applies the same malloc tuning as the server
(``--no-client-malloc-tuning`` to not), and the same OpenMP wait policy
(``lossd.server._openmp``, before torch loads), which its child processes
inherit: the wire table's torch reference (``bench._reference``, a process of its
own) runs in turn with the calls, and OpenMP's default left a worker spinning
after it into the next call, which was the echo's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from lossd.server._openmp import quiet_openmp

from ._measure import REPO

SECTIONS = ("wire", "encodings", "concurrency", "memory", "malloc", "training", "processes", "replicas", "batch")


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (``--out`` may point anywhere)."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections to run")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="folder for the results")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "performance.md")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    parser.add_argument("--no-client-malloc-tuning", action="store_true")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")

    if not args.no_client_malloc_tuning:
        from lossd._malloc import tune_malloc

        tune_malloc()
    quiet_openmp()  # before torch loads here (the module docstring says why); the servers inherit it
    from . import _batch, _sections
    from ._measure import BenchServer
    from ._report import machine, markdown, targets, update_docs

    big = 10**5 if args.quick else 10**7
    sizes = [10**2, 10**4, 10**5] if args.quick else [10**2, 10**4, 10**6, 10**7]
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "quick": args.quick, "load_before": list(os.getloadavg()),
    }
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    with BenchServer.start() as server:
        if "wire" in only:
            log("wire: EvaluateLoss vs echo")
            results["wire"] = _sections.wire(server, sizes, ["mse_loss", "cross_entropy"], args.quick,
                                             malloc_tuning=not args.no_client_malloc_tuning)
        if "encodings" in only:
            log("encodings: raw vs values")
            results["encodings"] = _sections.encodings(server, [10**4, 10**5 if args.quick else 10**6], args.quick)
        if "concurrency" in only:
            log("concurrency: 1, 4, 16 clients")
            results["concurrency"] = _sections.concurrency(server, [1, 4, 16], 8.0, args.quick, rounds=8)
        if "malloc" in only:
            log("malloc: tuned vs untuned server")
            results["malloc"] = _sections.malloc(server, [10**6 if not args.quick else 10**5, big], args.quick)
        if "training" in only:
            log("training: samples/s at world_size 1 and 2")
            results["training"] = _sections.training(server, args.quick)
    if "processes" in only:
        log("processes: 1 and 2 server processes on one port, the client in its own process")
        results["processes"] = _sections.processes([1, 2], 16, 4.0, args.quick)
    if "replicas" in only:
        log("replicas: submit -> first event with 1 and 3 replicas on a PostgreSQL job store")
        results["replicas"] = _sections.replicas(args.quick)
    if "memory" in only:
        log("memory: peak RSS of lossd serve during one large evaluation")
        results["memory"] = _sections.memory(big, args.quick)
    if "batch" in only:
        log("batch: EvaluateLossBatch vs in-process torch; the batch window at 1 and 16 clients")
        results["batch"] = _batch.run(args.quick)

    results["seconds"] = time.perf_counter() - started
    results["load_after"] = list(os.getloadavg())
    results["targets"] = targets(results) + _batch.targets(results)
    table = markdown(results) + _batch.markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "latest.md").write_text(table)
    print(table)
    if not args.no_docs and not args.quick and set(only) == set(SECTIONS):
        if update_docs(args.docs, table):
            log(f"updated {_shown(args.docs)}")
    log(f"wrote {_shown(args.out / 'latest.json')} and latest.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
