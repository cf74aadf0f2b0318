"""``make bench`` section ``batch``: EvaluateLossBatch and the batch window, side by side.

- ``evaluate_many``: 10,000 mse_loss evaluations of 100 float32 elements, each with its
  own gradients, through ``Client.evaluate_many`` (EvaluateLossBatch, vectorized groups)
  against a plain in-process torch loop (forward + ``autograd.grad`` per item), in turns
  in the same run; the ratio of rates is the target (≥ 0.5, moonshot ≥ 1).
- ``window``: ``lossd serve --batch-window-us W`` for several W: one client calling
  ``evaluate`` back to back (p50/p99: a lone call waits at most the window), and 16 client
  threads (calls/s, p99, server CPU per call): what the window buys under concurrency. Each
  server serves its metrics (``--metrics-port 0``): the share of calls that waited and the
  calls per group come from its ``lossd_batch_window_*`` counters.

Each part starts its own ``python -m lossd.server`` (the window is a server flag), so this
module depends on nothing else in bench/ but the measuring helpers. ``python -m bench._batch
--many`` runs the ``evaluate_many`` part alone (about 15 s; docs untouched).
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import tempfile
import threading
import time
import urllib.request
from typing import Any

import numpy as np

from ._measure import BenchServer, cpu_seconds, percentile

__all__ = ["WINDOWS_US", "markdown", "run", "targets"]

#: The windows measured (microseconds); 0 is off, DEFAULT_BATCH_WINDOW_US is the default ...
WINDOWS_US = (0, 1000, 2000, 5000)
#: ... each with this many client threads.
WINDOW_CLIENTS = (1, 4, 16)


def _server(data_dir: str, *args: str) -> Any:
    return BenchServer.start("--port", "0", "--plugins", "none", "--data-dir", data_dir, *args,
                             module="lossd.server")


def evaluate_many(count: int, n: int, reps: int) -> dict[str, Any]:
    """``count`` × mse_loss(``n`` float32): evaluate_many vs an in-process torch loop, in turns."""
    import torch
    import torch.nn.functional as F

    from lossd.client import Client

    rng = np.random.default_rng(1)
    pairs = [(rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32))
             for _ in range(count)]
    items = [{"loss": "mse_loss", "y_pred": p, "y_true": t} for p, t in pairs]

    def torch_loop() -> None:
        for p, t in pairs:
            x = torch.from_numpy(p).requires_grad_(True)
            y = torch.from_numpy(t).requires_grad_(True)
            loss = F.mse_loss(x, y)
            torch.autograd.grad(loss, [x, y])
            loss.item()

    rates: dict[str, list[float]] = {"torch": [], "evaluate_many": []}
    cpu: dict[str, list[float]] = {"server": [], "client": []}
    with tempfile.TemporaryDirectory(prefix="lossd-bench-") as data_dir, _server(data_dir) as server, \
            Client(server.address, timeout=600) as client:
        client.evaluate_many(items[:200])  # connect, warm up
        torch_loop()
        for _ in range(reps):
            start = time.perf_counter()
            torch_loop()
            rates["torch"].append(count / (time.perf_counter() - start))
            start, server_cpu, client_cpu = time.perf_counter(), cpu_seconds(server.pid), time.process_time()
            out = client.evaluate_many(items)
            rates["evaluate_many"].append(count / (time.perf_counter() - start))
            cpu["server"].append((cpu_seconds(server.pid) - server_cpu) / count * 1e3)
            cpu["client"].append((time.process_time() - client_cpu) / count * 1e3)
            assert len(out) == count and not any(isinstance(r, Exception) for r in out)
    ratios = [m / t for m, t in zip(rates["evaluate_many"], rates["torch"])]
    return {
        "count": count, "n": n, "reps": reps,
        "torch_per_s": statistics.median(rates["torch"]),
        "evaluate_many_per_s": statistics.median(rates["evaluate_many"]),
        "many_over_torch": statistics.median(ratios),
        "server_cpu_ms": statistics.median(cpu["server"]), "client_cpu_ms": statistics.median(cpu["client"]),
    }


def _metrics_url(server: BenchServer) -> str:
    """The metrics URL a ``lossd.server --metrics-port 0`` prints after its "listening on" line."""
    assert server.proc.stdout is not None
    for _ in range(50):
        m = re.search(r"metrics on (http://\S+/metrics)", server.proc.stdout.readline())
        if m:
            return m.group(1)
    raise RuntimeError("the server printed no 'metrics on' line")


def _window_counts(url: str | None) -> dict[str, float]:
    """The server's batch-window counters (none with the window off)."""
    if url is None:
        return {}
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    found = re.findall(r'^lossd_batch_window_(calls_total\{way="(\w+)"\}|groups_total) (\S+)$', text, re.M)
    return {way or "groups": float(value) for _, way, value in found}


def _clients(address: str, k: int, seconds: float, w: tuple[np.ndarray, np.ndarray], pid: int) -> dict[str, Any]:
    from lossd.client import Client

    clients = [Client(address, timeout=60) for _ in range(k)]
    for c in clients:
        c.evaluate("mse_loss", *w)
    latencies: list[list[float]] = [[] for _ in range(k)]
    barrier = threading.Barrier(k + 1)
    stop = [0.0]

    def worker(i: int) -> None:
        barrier.wait()
        while time.perf_counter() < stop[0]:
            t0 = time.perf_counter()
            clients[i].evaluate("mse_loss", *w)
            latencies[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(k)]
    for t in threads:
        t.start()
    stop[0] = time.perf_counter() + seconds
    start, server_cpu = time.perf_counter(), cpu_seconds(pid)
    barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for c in clients:
        c.close()
    flat = [x for lat in latencies for x in lat]
    return {"clients": k, "calls_per_s": len(flat) / elapsed, "p50_ms": percentile(flat, 50) * 1e3,
            "p99_ms": percentile(flat, 99) * 1e3,
            "server_cpu_ms_per_call": (cpu_seconds(pid) - server_cpu) / len(flat) * 1e3,
            "calls": len(flat), "seconds": elapsed, "server_cpu_s": cpu_seconds(pid) - server_cpu, "latencies": flat}


def window(windows: tuple[int, ...], seconds: float, rounds: int = 4) -> list[dict[str, Any]]:
    """One server per window, all running: 1, 4 and 16 clients calling evaluate(mse_loss, 100
    elements), ``seconds`` per server and client count (twice that for one client), in ``rounds``
    slices taken in turns (a busy machine slows every window alike)."""
    rng = np.random.default_rng(2)
    w = (rng.standard_normal(100, dtype=np.float32), rng.standard_normal(100, dtype=np.float32))
    slices: dict[tuple[int, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="lossd-bench-") as data_dir, contextlib.ExitStack() as stack:
        servers, urls = {}, {}
        for us in windows:
            os.makedirs(f"{data_dir}/{us}")
            servers[us] = stack.enter_context(_server(f"{data_dir}/{us}", "--batch-window-us", str(us),
                                                      "--metrics-port", "0"))
            urls[us] = _metrics_url(servers[us]) if us else None
        for _ in range(rounds):
            for k in WINDOW_CLIENTS:
                for us, server in servers.items():
                    before = _window_counts(urls[us])  # one client twice as long: its p99 is the target
                    part = _clients(server.address, k, seconds / rounds * (2 if k == 1 else 1), w, server.pid)
                    after = _window_counts(urls[us])
                    part["counts"] = {key: after[key] - before.get(key, 0.0) for key in after}
                    slices.setdefault((us, k), []).append(part)
    rows = []
    for (us, k), parts in sorted(slices.items()):
        calls = sum(p["calls"] for p in parts)
        flat = sorted(x for p in parts for x in p["latencies"])
        counts = {key: sum(p["counts"].get(key, 0.0) for p in parts) for key in ("at_once", "waited", "groups")}
        rows.append({"window_us": us, "clients": k, "calls_per_s": calls / sum(p["seconds"] for p in parts),
                     "p50_ms": percentile(flat, 50) * 1e3, "p99_ms": percentile(flat, 99) * 1e3,
                     "server_cpu_ms_per_call": sum(p["server_cpu_s"] for p in parts) / calls * 1e3,
                     "window": counts if us else None})
    return rows


def run(quick: bool = False, windows: bool = True) -> dict[str, Any]:
    """Both parts (``windows=False``: ``evaluate_many`` alone); ``quick``: fewer items, shorter runs."""
    return {
        "evaluate_many": evaluate_many(2_000 if quick else 10_000, 100, 1 if quick else 3),
        "window": window(WINDOWS_US, 1.0 if quick else 4.0) if windows else [],
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The batch targets of issue #13 (items 2 and 3), measured."""
    out: list[dict[str, Any]] = []
    b = results.get("batch")
    if not b:
        return out
    m = b["evaluate_many"]
    out.append({"target": "evaluate_many (EvaluateLossBatch) ÷ in-process torch loop, 10,000 × mse_loss 100",
                "goal": "≥ 0.5 (moonshot ≥ 1.0)", "measured": f"{m['many_over_torch']:.2f}",
                "met": m["many_over_torch"] >= 0.5})
    rows = {(r["window_us"], r["clients"]): r for r in b["window"]}
    base = rows.get((0, 1))
    for (us, k), r in sorted(rows.items()):
        if k == 1 and us and base:
            grew = r["p99_ms"] - base["p99_ms"]
            c = r.get("window") or {}
            waited = f" ({c['waited']:.0f} of {c['waited'] + c['at_once']:.0f} calls waited)" if c else ""
            out.append({"target": f"p99 at one client grows by at most the window ({us} µs)",
                        "goal": f"≤ {us / 1e3:g} ms", "measured": f"{grew:+.2f} ms{waited}", "met": grew <= us / 1e3})
    return out


def markdown(results: dict[str, Any]) -> str:
    """The section's tables."""
    b = results.get("batch")
    if not b:
        return ""
    m = b["evaluate_many"]
    lines = [
        "", f"**EvaluateLossBatch: {m['count']} mse_loss evaluations of {m['n']} float32 elements, each with its own "
        f"gradients** (medians of {m['reps']} runs in turns)", "",
        "| | in-process torch loop | `evaluate_many` (EvaluateLossBatch) | ÷ torch | CPU ms per evaluation, "
        "server + client |", "|---|---|---|---|---|",
        f"| evaluations/s | {m['torch_per_s']:.0f} | {m['evaluate_many_per_s']:.0f} | {m['many_over_torch']:.2f} | "
        f"{m['server_cpu_ms']:.3f} + {m['client_cpu_ms']:.3f} |",
    ]
    if not b["window"]:
        return "\n".join(lines) + "\n"
    lines += [
        "", "**The batch window** (`--batch-window-us`; `evaluate` of mse_loss on 100 elements; client threads of "
        "one process, each with its own channel)", "",
        "| window µs | clients | calls/s | p50 ms | p99 ms | server CPU ms per call | calls that waited | "
        "calls per group |", "|---|---|---|---|---|---|---|---|",
    ]
    for r in b["window"]:
        c = r.get("window")
        waited = f"{c['waited'] / max(1.0, c['waited'] + c['at_once']):.0%}" if c else "-"
        per_group = f"{c['waited'] / c['groups']:.1f}" if c and c["groups"] else "-"
        lines.append(f"| {r['window_us']} | {r['clients']} | {r['calls_per_s']:.0f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['server_cpu_ms_per_call']:.3f} | {waited} | {per_group} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m bench._batch [--quick] [--many]: this section alone (--many: evaluate_many only)
    import json
    import sys

    found = {"batch": run("--quick" in sys.argv, windows="--many" not in sys.argv)}
    print(markdown(found))
    print(json.dumps(targets(found), indent=1))
