"""``python -m bench._compare --base-python PY --base-repo DIR``: this checkout against another
one (say ``main`` before a change), side by side in one run, each normalized by its own echo.

For a before/after of a change, on a machine too noisy for two separate ``make bench`` runs
to be compared. Make the other checkout importable with its own interpreter first, e.g.
``git archive main | tar -x -C /tmp/base`` and a virtualenv whose ``lossd`` is that tree
(docs/performance.md says how). Figures, each sampled in turn for both checkouts:

- small calls: ``bench._load`` (16 client threads in a process of their own, this checkout's
  SDK for both) against each checkout's bench server: calls/s and server CPU per call of
  EvaluateLoss (mse_loss, 100 elements) and of the echo, and their ratios;
- SDK: ``Client.evaluate`` ÷ echo at 10^6 and 10^7 float32 from each checkout's own SDK,
  against this checkout's server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from ._measure import REPO, BenchServer, cpu_seconds

__all__ = ["main"]

_SDK = """
import functools, json, sys
from bench._measure import interleaved, summary
try:
    from bench._echo import ECHO, echo_payload
except ImportError:  # a checkout from before bench/_echo.py
    from bench._server import ECHO, echo_payload
from bench._workloads import workload
from lossd.client import Client, build_request
from lossd._malloc import tune_malloc
tune_malloc()
address, reps = sys.argv[1], int(sys.argv[2])
out = {}
with Client(address, timeout=600) as client:
    for n in (10**6, 10**7):
        w = workload("mse_loss", n)
        size = len(build_request(w.loss, w.y_pred, w.y_true)[0].SerializeToString())
        reply = client.channel.unary_unary("/lossd.v1.LossService/EvaluateLoss")(
            build_request(w.loss, w.y_pred, w.y_true)[0].SerializeToString())
        s = interleaved({"echo": functools.partial(client.channel.unary_unary(ECHO), echo_payload(size, len(reply))),
                         "sdk": functools.partial(client.evaluate, w.loss, w.y_pred, w.y_true)}, reps if n < 10**7 else max(3, reps // 3))
        med = {k: summary(v)["median_ms"] for k, v in s.items()}
        out[str(n)] = {**med, "sdk_over_echo": med["sdk"] / med["echo"]}
print(json.dumps(out))
"""


def _load(address: str, what: str, seconds: float, servers: list[BenchServer]) -> dict[str, Any]:
    before = sum(cpu_seconds(s.pid) for s in servers)
    out = subprocess.run([sys.executable, "-m", "bench._load", address, "16", str(seconds), what], cwd=REPO,
                         capture_output=True, text=True, check=True)
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    row["server_cpu_ms_per_call"] = (sum(cpu_seconds(s.pid) for s in servers) - before) / row["calls"] * 1e3
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-python", required=True, help="the interpreter whose lossd is the other checkout")
    parser.add_argument("--base-repo", type=Path, required=True, help="the other checkout (its bench/ is used)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--sdk-reps", type=int, default=15)
    args = parser.parse_args(argv)
    sides = {"before": (args.base_python, args.base_repo), "after": (sys.executable, REPO)}
    small: dict[str, dict[str, list[dict[str, Any]]]] = {side: {"evaluate": [], "echo": []} for side in sides}
    with BenchServer.start(python=args.base_python, repo=args.base_repo) as base, BenchServer.start() as new:
        servers = {"before": base, "after": new}
        for _ in range(args.rounds):
            for side, server in servers.items():
                for what in ("echo", "evaluate"):
                    small[side][what].append(_load(server.address, what, args.seconds, [server]))
        sdk = {}
        for side, (python, repo) in sides.items():
            out = subprocess.run([python, "-c", _SDK, new.address, str(args.sdk_reps)], cwd=repo,
                                 capture_output=True, text=True, check=True)
            sdk[side] = json.loads(out.stdout.strip().splitlines()[-1])
    lines = ["| | before | after |", "|---|---|---|"]

    def med(side: str, what: str, key: str) -> float:
        return statistics.median(r[key] for r in small[side][what])

    for label, key in (("calls/s, 16 clients", "calls_per_s"), ("server CPU ms per call", "server_cpu_ms_per_call")):
        for what in ("echo", "evaluate"):
            lines.append(f"| {what} {label} | {med('before', what, key):.3g} | {med('after', what, key):.3g} |")
    lines.append("| EvaluateLoss ÷ echo, calls/s | " + " | ".join(
        f"{med(s, 'evaluate', 'calls_per_s') / med(s, 'echo', 'calls_per_s'):.2f}" for s in sides) + " |")
    lines.append("| EvaluateLoss ÷ echo, server CPU per call | " + " | ".join(
        f"{med(s, 'evaluate', 'server_cpu_ms_per_call') / med(s, 'echo', 'server_cpu_ms_per_call'):.2f}"
        for s in sides) + " |")
    for n in ("1000000", "10000000"):
        lines.append(f"| Client.evaluate ÷ echo, mse_loss 10^{len(n) - 1} float32 | "
                     + " | ".join(f"{sdk[s][n]['sdk_over_echo']:.2f} ({sdk[s][n]['sdk']:.0f} ms)" for s in sides) + " |")
    print(json.dumps({"small": small, "sdk": sdk}), file=sys.stderr)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
