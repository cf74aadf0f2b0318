"""The benchmark's machine description, target verdicts and Markdown tables."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path
from collections.abc import Callable
from typing import Any

__all__ = ["DOCS_BEGIN", "DOCS_END", "TABLES", "TARGETS", "machine", "markdown", "targets", "update_docs"]

DOCS_BEGIN = "<!-- bench:begin (make bench rewrites this part) -->"
DOCS_END = "<!-- bench:end -->"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": model or platform.processor() or platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "libc": " ".join(platform.libc_ver()),
        "python": platform.python_version(),
        **{dist: version(dist) for dist in ("torch", "grpcio", "protobuf", "numpy")},
    }


#: One row of the targets table: what, its goal, what was measured, met (None: a measurement only).
Target = dict[str, Any]


def _target(name: str, goal: str, measured: str, met: bool | None) -> Target:
    return {"target": name, "goal": goal, "measured": measured, "met": met}


def _wire_targets(results: dict[str, Any]) -> list[Target]:
    out = []
    for row in results.get("wire", []):
        if row["n"] >= 10**6:
            size = f"{row['loss']} 10^{len(str(row['n'])) - 1}"
            if row["loss"] == "mse_loss":  # float32 in and out: issue #13's SDK figure
                out.append(_target(f"Client.evaluate ÷ echo, {size} float32", "≤ 1.3", f"{row['sdk_over_echo']:.2f}",
                                   row["sdk_over_echo"] <= 1.3))
                out.append(_target(f"its floor: (echo + torch in-process + one copy of the arrays) ÷ echo, {size}",
                                   "-", f"{row['floor_over_echo']:.2f}", None))
            out.append(_target(f"EvaluateLoss (server side) ÷ echo, {size}", "≤ 1.3",
                               f"{row['evaluate_over_echo']:.2f}", row["evaluate_over_echo"] <= 1.3))
    return out


def _small_call_targets(results: dict[str, Any]) -> list[Target]:
    rows = {(r["what"], r["clients"]): r for r in results.get("concurrency", [])}
    top = max((k for what, k in rows if what == "echo"), default=None)
    if top is None or ("evaluate", top) not in rows:
        return []
    ev, echo = rows[("evaluate", top)], rows[("echo", top)]
    cpu = ev["server_cpu_ms_per_call"] / echo["server_cpu_ms_per_call"]
    rate = ev["calls_per_s"] / echo["calls_per_s"]
    return [
        _target("server CPU per small evaluation ÷ echo's (mse_loss, 100 float32)", "≤ 1.5",
                f"{cpu:.2f} ({ev['server_cpu_ms_per_call']:.3f} ms vs {echo['server_cpu_ms_per_call']:.3f})", cpu <= 1.5),
        _target(f"calls/s with {top} clients ÷ echo's", "≥ 0.6",
                f"{rate:.2f} ({ev['calls_per_s']:.0f} vs {echo['calls_per_s']:.0f}), p99 {ev['p99_ms']:.1f} ms",
                rate >= 0.6),
    ]


def _encoding_targets(results: dict[str, Any]) -> list[Target]:
    return [_target("values ÷ raw time, mse_loss 10^6", "≥ 5×", f"{row['values_over_raw']:.1f}×",
                    row["values_over_raw"] >= 5) for row in results.get("encodings", []) if row["n"] == 10**6]


def _memory_targets(results: dict[str, Any]) -> list[Target]:
    return [_target("server peak RSS above baseline, 10^7 mse_loss, malloc tuning on", "≤ 4× payload",
                    f"{row['peak_over_payload']:.2f}× payload", row["peak_over_payload"] <= 4)
            for row in results.get("memory", []) if row["malloc_tuning"]]


def _process_targets(results: dict[str, Any]) -> list[Target]:
    rows = {(r["what"], r["processes"]): r for r in results.get("processes", [])}
    counts = sorted({n for _, n in rows})
    if len(counts) < 2 or ("evaluate", counts[0]) not in rows:
        return []
    one, many = rows[("evaluate", counts[0])], rows[("evaluate", counts[-1])]
    return [_target(f"--processes prototype: calls/s with {counts[-1]} processes ÷ {counts[0]} (client in its own process)",
                    "measure, then decide", f"{many['calls_per_s'] / one['calls_per_s']:.2f}", None)]


#: The functions that turn results into rows of the targets table, in table order. A new section
#: adds its own function here (and its table to ``TABLES``); nothing else changes.
TARGETS: list[Callable[[dict[str, Any]], list[Target]]] = [
    _small_call_targets, _wire_targets, _encoding_targets, _memory_targets, _process_targets,
]


def targets(results: dict[str, Any]) -> list[Target]:
    """Each target of docs/performance.md with the measured value and whether it is met."""
    return [row for rule in TARGETS for row in rule(results)]


def _ms(x: float) -> str:
    return f"{x:.3g}" if x < 10 else f"{x:.0f}"


def _mib(x: float) -> str:
    return f"{x / 2**20:.0f}"


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables (what docs/performance.md shows)."""
    m = results["machine"]
    lines = [
        f"Measured {results['date']} on {m['nproc']} CPUs ({m['cpu']}), {m['os']}, {m['libc']}; "
        f"Python {m['python']}, torch {m['torch']}, grpcio {m['grpcio']}, protobuf {m['protobuf']}, "
        f"numpy {m['numpy']}. Load average {results['load_before'][0]:.1f} before, "
        f"{results['load_after'][0]:.1f} after; {results['seconds']:.0f} s in all"
        f"{' (quick run)' if results.get('quick') else ''}.",
        "",
        "**Targets**",
        "",
        "| Target | Goal | Measured | Met |",
        "|---|---|---|---|",
    ]
    for t in results["targets"]:
        met = "-" if t["met"] is None else "yes" if t["met"] else "**no**"
        lines.append(f"| {t['target']} | {t['goal']} | {t['measured']} | {met} |")
    if results.get("wire"):
        lines += [
            "", "**EvaluateLoss next to a bare echo of the same bytes** (median ms; server stages from the "
            "reply's `timing`)", "",
            "| loss | elements | request MB | echo | EvaluateLoss | ÷ echo | SDK evaluate | ÷ echo | "
            "torch in-process | one copy | floor ÷ echo | server decode / fwd / bwd / encode |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["wire"]:
            t = r["server_timing_ms"]
            lines.append(
                f"| {r['loss']} | 10^{len(str(r['n'])) - 1} | {r['request_bytes'] / 1e6:.3g} | {_ms(r['echo_ms'])} | "
                f"{_ms(r['evaluate_ms'])} | {r['evaluate_over_echo']:.2f} | {_ms(r['sdk_ms'])} | "
                f"{r['sdk_over_echo']:.2f} | {_ms(r['torch_ms'])} | {_ms(r['copy_ms'])} | {r['floor_over_echo']:.2f} | "
                f"{t['decode_ms']:.2g} / {t['forward_ms']:.2g} / "
                f"{t['backward_ms']:.2g} / {t['encode_ms']:.2g} |")
        by_thread = [r for r in results["wire"] if r.get("server_cpu_ms")]
        if by_thread:
            lines += ["", "**Where the server's CPU goes, large calls** (CPU ms per call, series of each in turn; "
                      "`loop`: the event loop's thread; `grpc`: gRPC's threads; `other`: the evaluation pool and "
                      "torch's OpenMP workers)", "",
                      "| loss | elements | echo loop / grpc / other | EvaluateLoss loop / grpc / other | added |",
                      "|---|---|---|---|---|"]
            for r in by_thread:
                e, v = r["server_cpu_ms"]["echo"], r["server_cpu_ms"]["evaluate"]
                lines.append(f"| {r['loss']} | 10^{len(str(r['n'])) - 1} | "
                             f"{e['loop']:.2g} / {e['grpc']:.2g} / {e['other']:.2g} | "
                             f"{v['loop']:.2g} / {v['grpc']:.2g} / {v['other']:.2g} | "
                             f"{sum(v.values()) - sum(e.values()):+.2g} |")
    if results.get("encodings"):
        lines += ["", "**raw bytes vs `values` numbers** (`Client.evaluate`, mse_loss, median ms)", "",
                  "| elements | raw | values | values ÷ raw |", "|---|---|---|---|"]
        for r in results["encodings"]:
            lines.append(f"| 10^{len(str(r['n'])) - 1} | {_ms(r['raw_ms'])} | {_ms(r['values_ms'])} | "
                         f"{r['values_over_raw']:.1f} |")
    if results.get("concurrency"):
        echo = next((r for r in results["concurrency"] if r["what"] == "echo"), None)
        lines += ["", "**Small evaluations: concurrent clients** (threads of one process, each with its own channel; "
                  "mse_loss on 100 float32 elements; the echo of the same bytes and the same forward + backward "
                  "in-process, one thread, beside them)", "",
                  "| call | clients | calls/s | ÷ echo | p50 ms | p99 ms | CPU ms per call, server + client | "
                  "server CPU ÷ echo |", "|---|---|---|---|---|---|---|---|"]
        for r in results["concurrency"]:
            what = "torch in-process loop" if r["what"] == "torch" else r["what"]
            rate = f"{r['calls_per_s'] / echo['calls_per_s']:.2f}" if echo else "-"
            cpu = (f"{r['server_cpu_ms_per_call'] / echo['server_cpu_ms_per_call']:.2f}"
                   if echo and r["what"] != "torch" else "-")
            lines.append(f"| {what} | {r['clients']} | {r['calls_per_s']:.0f} | {rate} | {r['p50_ms']:.2f} | "
                         f"{r['p99_ms']:.2f} | {r['server_cpu_ms_per_call']:.3f} + {r['client_cpu_ms_per_call']:.3f} | "
                         f"{cpu} |")
    if results.get("memory"):
        lines += ["", "**Server memory, one 10^7-element mse_loss evaluation** (fresh `python -m lossd.server`)", "",
                  "| malloc tuning | payload MiB | baseline MiB | peak MiB | peak − baseline | RSS after MiB | "
                  "first call s |", "|---|---|---|---|---|---|---|"]
        for r in results["memory"]:
            lines.append(f"| {'on' if r['malloc_tuning'] else 'off'} | {_mib(r['payload_bytes'])} | "
                         f"{_mib(r['baseline_bytes'])} | {_mib(r['peak_bytes'])} | "
                         f"{r['peak_over_payload']:.2f}× payload | {_mib(r['after_bytes'])} | "
                         f"{r['first_call_s']:.2f} |")
    t = results.get("training")
    if t:
        sps, wall = t["samples_per_s"], t["wall_s"]
        lines += ["", f"**Data-parallel training** (one TrainJob: MLP {t['hidden']}, {t['samples']} samples, batch "
                  f"{t['batch_size']}, {t['epochs']} epoch; world_size 1 and 2 alternating, medians; samples/s as "
                  "the job reports it, wall time from submission)", "",
                  "| world_size | samples/s | ÷ world_size 1 | job wall s |", "|---|---|---|---|"]
        for ws in sorted(sps, key=int):
            lines.append(f"| {ws} | {sps[ws]:.0f} | {sps[ws] / sps[min(sps, key=int)]:.2f} | {wall[ws]:.2f} |")
    r = results.get("replicas")
    if r and "skipped" in r:
        lines += ["", f"**Replicas on a PostgreSQL job store**: skipped ({r['skipped']})"]
    elif r:
        lines += ["", f"**Replicas on a PostgreSQL job store** (a small TrainJob, {r['jobs']} submitted one at a time, "
                  "round robin; ms from submission)", "",
                  "| replicas | first event p50 | p90 | RUNNING p50 | p90 |", "|---|---|---|---|---|"]
        for n in ("1", "3"):
            f, g = r[n]["first_event_ms"], r[n]["running_ms"]
            lines.append(f"| {n} | {f['p50']:.1f} | {f['p90']:.1f} | {g['p50']:.1f} | {g['p90']:.1f} |")
    if results.get("malloc"):
        lines += ["", "**What the malloc tuning buys** (mse_loss, median ms, tuned and untuned servers side by side)",
                  "", "| elements | echo tuned | echo untuned | EvaluateLoss tuned | EvaluateLoss untuned | "
                  "speed-up echo / EvaluateLoss |", "|---|---|---|---|---|---|"]
        for r in results["malloc"]:
            lines.append(f"| 10^{len(str(r['n'])) - 1} | {_ms(r['tuned_echo_ms'])} | {_ms(r['untuned_echo_ms'])} | "
                         f"{_ms(r['tuned_evaluate_ms'])} | {_ms(r['untuned_evaluate_ms'])} | "
                         f"{r['echo_speedup']:.1f}× / {r['evaluate_speedup']:.1f}× |")
    for table in TABLES:
        lines += table(results)
    return "\n".join(lines) + "\n"


def _processes_table(results: dict[str, Any]) -> list[str]:
    rows = results.get("processes")
    if not rows:
        return []
    lines = ["", "**The `--processes` prototype** (bench server processes sharing one port with `SO_REUSEPORT`; "
             f"{rows[0]['clients']} client threads in a process of their own; mse_loss on 100 elements)", "",
             "| processes | call | calls/s | p50 ms | p99 ms | CPU ms per call, servers + client |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['processes']} | {r['what']} | {r['calls_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['server_cpu_ms_per_call']:.3f} + {r['client_cpu_ms_per_call']:.3f} |")
    return lines


#: Tables of sections added after the first ones, in order: each a function of the results giving
#: Markdown lines (none when its section did not run). A new section adds its table here.
TABLES: list[Callable[[dict[str, Any]], list[str]]] = [_processes_table]


def update_docs(path: Path, table: str) -> bool:
    """Replace the part of ``path`` between the bench markers with ``table``."""
    text = path.read_text()
    pattern = re.compile(re.escape(DOCS_BEGIN) + r".*?" + re.escape(DOCS_END), re.S)
    if not pattern.search(text):
        return False
    path.write_text(pattern.sub(lambda _: f"{DOCS_BEGIN}\n{table}{DOCS_END}", text))
    return True
