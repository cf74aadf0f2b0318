"""The benchmark's machine description, target verdicts and Markdown tables."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["DOCS_BEGIN", "DOCS_END", "machine", "markdown", "targets", "update_docs"]

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


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of docs/performance.md with the measured value and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(name: str, measured: str, met: bool, goal: str) -> None:
        out.append({"target": name, "goal": goal, "measured": measured, "met": met})

    for row in results.get("wire", []):
        if row["n"] >= 10**6:
            add(f"EvaluateLoss ÷ echo, {row['loss']} 10^{len(str(row['n'])) - 1}",
                f"{row['evaluate_over_echo']:.2f} (SDK {row['sdk_over_echo']:.2f})",
                row["evaluate_over_echo"] <= 1.3, "≤ 1.3")
    for row in results.get("encodings", []):
        if row["n"] == 10**6:
            add("values ÷ raw time, mse_loss 10^6", f"{row['values_over_raw']:.1f}×", row["values_over_raw"] >= 5, "≥ 5×")
    batch = results.get("batching")
    if batch:
        add("evaluate_many ÷ in-process torch loop (evaluations/s)", f"{batch['many_over_torch']:.2f}",
            batch["many_over_torch"] >= 0.5, "≥ 0.5")
    for row in results.get("concurrency", []):
        if row["what"] == "evaluate" and row["clients"] == 16:
            add("16 concurrent clients", f"{row['calls_per_s']:.0f} calls/s, p99 {row['p99_ms']:.1f} ms",
                row["calls_per_s"] >= 1100 and row["p99_ms"] <= 30, "≥ 1100 calls/s, p99 ≤ 30 ms")
    for row in results.get("memory", []):
        if row["malloc_tuning"]:
            add("server peak RSS above baseline, 10^7 mse_loss", f"{row['peak_over_payload']:.2f}× payload",
                row["peak_over_payload"] <= 5, "≤ 5× payload")
    return out


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
        lines.append(f"| {t['target']} | {t['goal']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    if results.get("wire"):
        lines += [
            "", "**EvaluateLoss next to a bare echo of the same bytes** (median ms; server stages from the "
            "reply's `timing`)", "",
            "| loss | elements | request MB | echo | EvaluateLoss | ÷ echo | SDK evaluate | ÷ echo | "
            "torch in-process | server decode / fwd / bwd / encode |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["wire"]:
            t = r["server_timing_ms"]
            lines.append(
                f"| {r['loss']} | 10^{len(str(r['n'])) - 1} | {r['request_bytes'] / 1e6:.3g} | {_ms(r['echo_ms'])} | "
                f"{_ms(r['evaluate_ms'])} | {r['evaluate_over_echo']:.2f} | {_ms(r['sdk_ms'])} | "
                f"{r['sdk_over_echo']:.2f} | {_ms(r['torch_ms'])} | {t['decode_ms']:.2g} / {t['forward_ms']:.2g} / "
                f"{t['backward_ms']:.2g} / {t['encode_ms']:.2g} |")
    if results.get("encodings"):
        lines += ["", "**raw bytes vs `values` numbers** (`Client.evaluate`, mse_loss, median ms)", "",
                  "| elements | raw | values | values ÷ raw |", "|---|---|---|---|"]
        for r in results["encodings"]:
            lines.append(f"| 10^{len(str(r['n'])) - 1} | {_ms(r['raw_ms'])} | {_ms(r['values_ms'])} | "
                         f"{r['values_over_raw']:.1f} |")
    b = results.get("batching")
    if b:
        lines += [
            "", f"**{b['count']} evaluations of {b['n']} elements** (mse_loss, evaluations/s)", "",
            "| | in-process torch loop | evaluate_many (stream) | one unary call each | "
            "prototype: 100 per message |",
            "|---|---|---|---|---|",
            f"| evaluations/s | {b['torch_per_s']:.0f} | {b['evaluate_many_per_s']:.0f} | "
            f"{b['unary_per_s']:.0f} | {b['batch_prototype_per_s']:.0f} |",
            f"| ÷ torch | 1 | {b['many_over_torch']:.2f} | {b['unary_per_s'] / b['torch_per_s']:.2f} | "
            f"{b['prototype_over_torch']:.2f} |",
            "| CPU ms per evaluation, server + client | - | "
            + " | ".join(f"{b[k + '_cpu_ms']['server']:.2f} + {b[k + '_cpu_ms']['client']:.2f}"
                         for k in ("evaluate_many", "unary", "batch_prototype")) + " |",
        ]
    if results.get("concurrency"):
        lines += ["", "**Concurrent clients** (threads of one process, each with its own channel; "
                  "mse_loss on 100 elements)", "",
                  "| call | clients | calls/s | p50 ms | p99 ms | CPU ms per call, server + client |",
                  "|---|---|---|---|---|---|"]
        for r in results["concurrency"]:
            lines.append(f"| {r['what']} | {r['clients']} | {r['calls_per_s']:.0f} | {r['p50_ms']:.2f} | "
                         f"{r['p99_ms']:.2f} | {r['server_cpu_ms_per_call']:.2f} + {r['client_cpu_ms_per_call']:.2f} |")
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
    return "\n".join(lines) + "\n"


def update_docs(path: Path, table: str) -> bool:
    """Replace the part of ``path`` between the bench markers with ``table``."""
    text = path.read_text()
    pattern = re.compile(re.escape(DOCS_BEGIN) + r".*?" + re.escape(DOCS_END), re.S)
    if not pattern.search(text):
        return False
    path.write_text(pattern.sub(lambda _: f"{DOCS_BEGIN}\n{table}{DOCS_END}", text))
    return True
