"""The benchmark sections. Each takes the running bench server and returns plain data.

Every comparison is measured in one run, contenders sampled in turn
(:func:`bench._measure.interleaved`), so a busy machine slows all of them.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lossd._methods import EVALUATE_LOSS

from ._measure import (REPO, BenchServer, cpu_seconds, interleaved, percentile, proc_status_kib, summary,
                       thread_cpu_seconds)
from ._echo import ECHO, echo_payload
from ._reference import Reference
from ._workloads import local_loop, workload

__all__ = ["concurrency", "encodings", "malloc", "memory", "processes", "replicas", "training", "wire"]

EVALUATE = EVALUATE_LOSS.path


def _reps(n: int, quick: bool) -> int:
    """Calls of each contender at ``n`` elements. Large calls spread widely on a shared host (an
    80 MB echo's p10 and p90 were 124 and 181 ms in one run), so a median of 5 moved a ratio by
    ±0.1 between runs; 15 at 10^7 and 41 at 10^6 cost about 30 s more in all."""
    reps = 200 if n <= 10**4 else 41 if n <= 10**6 else 15
    return max(3, reps // 10) if quick else reps


def _median_timing(timings: list[Any]) -> dict[str, float]:
    return {k: statistics.median(getattr(t, k) for t in timings)
            for k in ("decode_ms", "forward_ms", "backward_ms", "encode_ms")}


def _keep_timing(into: list[Any], fn: Callable[[Any], bytes], arg: Any) -> None:
    """Call ``fn(arg)`` and keep its reply's ``timing`` only: the reply is parsed with its payloads left in
    place (0.1 ms at 10^7) and dropped, so that held replies (80 MB each) do not grow this process's heap
    under the contenders measured after it (they then paid fresh page faults: the SDK's 10^7 call took
    290-570 ms instead of ~200)."""
    from lossd._framing import split_payloads
    from lossd.v1 import lossd_pb2

    into.append(split_payloads(fn(arg), lossd_pb2.EvaluateLossResponse)[0].timing)


def _cpu_by_thread(pid: int, calls: dict[str, Callable[[], object]], reps: int,
                   rounds: int = 3) -> dict[str, dict[str, float]]:
    """The server's CPU ms per call of each of ``calls``, by thread role (``thread_cpu_seconds``): ``reps``
    calls of one, then of the next, ``rounds`` times in turn (CPU time is counted in clock ticks, so a
    series is summed rather than one call sampled)."""
    total: dict[str, dict[str, float]] = {name: {} for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            before = thread_cpu_seconds(pid)
            for _ in range(reps):
                fn()
            after = thread_cpu_seconds(pid)
            for role in after:
                total[name][role] = total[name].get(role, 0.0) + after[role] - before[role]
    return {name: {role: v / (reps * rounds) * 1e3 for role, v in roles.items()} for name, roles in total.items()}


def wire(server: BenchServer, sizes: list[int], losses: list[str], quick: bool,
         malloc_tuning: bool = True) -> list[dict[str, Any]]:
    """EvaluateLoss next to a bare echo of the same bytes, per loss and size.

    ``echo``: the request's size in, the reply's size out, through the same server.
    ``evaluate``: EvaluateLoss with the request already serialized and the reply
    left as bytes, as the echo client does: what the server adds. ``sdk``:
    ``Client.evaluate`` from numpy arrays to numpy results, client work included.
    ``torch``: the same forward and backward without gRPC, in a process of its own (:mod:`._reference`
    says why), set up as this one (``malloc_tuning``: whether this process's malloc is tuned). ``copy``: one copy of the
    arrays' bytes, the least a client of grpcio (which sends ``bytes`` only) must do.
    ``floor_over_echo``: (echo + torch + copy) ÷ echo, what the SDK's ratio would be if
    everything else lossd does cost nothing. From 10^6 elements, ``server_cpu_ms``: the server's
    CPU per call of the echo and of EvaluateLoss by thread (event loop, gRPC, the rest), which shows
    where what EvaluateLoss adds is spent.
    """
    from lossd.client import Client, build_request

    rows = []
    with Client(server.address, timeout=600) as client, Client(server.echo_address, timeout=600) as bare, \
            Reference.start(malloc_tuning) as reference:
        echo = bare.channel.unary_unary(ECHO)
        evaluate = client.channel.unary_unary(EVALUATE)
        for loss in losses:
            for n in sizes:
                w = workload(loss, n)
                reference.use(loss, n)
                request = build_request(loss, w.y_pred, w.y_true)[0].SerializeToString()
                reply = evaluate(request)
                payload = echo_payload(len(request), len(reply))
                timings: list[Any] = []
                samples = interleaved({
                    "echo": functools.partial(echo, payload),
                    "evaluate": functools.partial(_keep_timing, timings, evaluate, request),
                    "sdk": functools.partial(client.evaluate, w.loss, w.y_pred, w.y_true),
                    "torch": reference,
                    "copy": functools.partial(b"".join, [w.y_pred.data, w.y_true.data]),
                }, _reps(n, quick))
                med = {k: summary(v)["median_ms"] for k, v in samples.items()}
                by_thread = _cpu_by_thread(server.pid, {"echo": functools.partial(echo, payload),
                                                        "evaluate": functools.partial(evaluate, request)},
                                           max(3, _reps(n, quick) // 3)) if n >= min(10**6, max(sizes)) else None
                rows.append({
                    "loss": loss, "n": n, "request_bytes": len(request), "reply_bytes": len(reply),
                    "echo_ms": med["echo"], "evaluate_ms": med["evaluate"], "sdk_ms": med["sdk"],
                    "torch_ms": med["torch"], "copy_ms": med["copy"], "server_timing_ms": _median_timing(timings),
                    "server_cpu_ms": by_thread,
                    "evaluate_over_echo": med["evaluate"] / med["echo"], "sdk_over_echo": med["sdk"] / med["echo"],
                    "floor_over_echo": (med["echo"] + med["torch"] + med["copy"]) / med["echo"],
                    "samples": {k: summary(v) for k, v in samples.items()},
                })
    return rows


def encodings(server: BenchServer, sizes: list[int], quick: bool) -> list[dict[str, Any]]:
    """``Client.evaluate`` with raw bytes next to ``values`` numbers (mse_loss, both ways)."""
    from lossd.client import Client

    rows = []
    with Client(server.address, timeout=600) as client:
        for n in sizes:
            w = workload("mse_loss", n)
            samples = interleaved({
                "raw": functools.partial(client.evaluate, w.loss, w.y_pred, w.y_true),
                "values": functools.partial(client.evaluate, w.loss, w.y_pred, w.y_true, encoding="values"),
            }, max(3, _reps(n, quick) // 2))
            med = {k: summary(v)["median_ms"] for k, v in samples.items()}
            rows.append({"n": n, "raw_ms": med["raw"], "values_ms": med["values"],
                         "values_over_raw": med["values"] / med["raw"]})
    return rows


def concurrency(server: BenchServer, levels: list[int], seconds: float, quick: bool,
                rounds: int = 4) -> list[dict[str, Any]]:
    """``k`` client threads, each with its own ``Client`` (channel), calling
    ``evaluate("mse_loss", 100 elements)`` back to back; and the echo at the top level. Every
    level and the echo run ``seconds`` in all, in ``rounds`` slices taken in turns, so that a
    host whose speed drifts over minutes slows each of them alike."""
    from lossd.client import Client, build_request

    if quick:
        seconds, rounds = min(seconds, 1.0), 1
    w = workload("mse_loss", 100)
    size = len(build_request(w.loss, w.y_pred, w.y_true)[0].SerializeToString())
    payload = echo_payload(size, size)

    def run(k: int, call_factory: Callable[[Any], Callable[[], object]], address: str) -> dict[str, Any]:
        clients = [Client(address, timeout=60) for _ in range(k)]
        calls = [call_factory(c) for c in clients]
        for c in calls:
            c()
        latencies: list[list[float]] = [[] for _ in range(k)]
        stop = time.perf_counter() + seconds / rounds
        barrier = threading.Barrier(k + 1)

        def worker(i: int) -> None:
            barrier.wait()
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                calls[i]()
                latencies[i].append(time.perf_counter() - t0)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(k)]
        for t in threads:
            t.start()
        barrier.wait()
        start, server_cpu, client_cpu = time.perf_counter(), cpu_seconds(server.pid), time.process_time()
        for t in threads:
            t.join()
        out = {"elapsed": time.perf_counter() - start, "server_cpu": cpu_seconds(server.pid) - server_cpu,
               "client_cpu": time.process_time() - client_cpu, "latencies": [x for lat in latencies for x in lat]}
        for c in clients:
            c.close()
        return out

    runs: list[tuple[str, int, Callable[[Any], Callable[[], object]], str]] = [
        ("evaluate", k, lambda c: (lambda: c.evaluate(w.loss, w.y_pred, w.y_true)), server.address) for k in levels]
    runs.append(("echo", max(levels), lambda c: functools.partial(c.channel.unary_unary(ECHO), payload),
                 server.echo_address))
    slices: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(rounds):
        for label, k, factory, address in runs:
            slices.setdefault((label, k), []).append(run(k, factory, address))
    rows = []
    for (label, k), parts in slices.items():
        flat = sorted(x for p in parts for x in p["latencies"])
        calls = len(flat)
        rows.append({"what": label, "clients": k, "calls_per_s": calls / sum(p["elapsed"] for p in parts),
                     "p50_ms": percentile(flat, 50) * 1e3, "p99_ms": percentile(flat, 99) * 1e3,
                     "server_cpu_ms_per_call": sum(p["server_cpu"] for p in parts) / calls * 1e3,
                     "client_cpu_ms_per_call": sum(p["client_cpu"] for p in parts) / calls * 1e3})
    # The reference: the same forward and backward in this process, one thread, as fast as it goes.
    loop, done = local_loop(w), 0
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds / 2:
        loop()
        done += 1
    elapsed = time.perf_counter() - start
    rows.insert(len(levels), {"what": "torch", "clients": 1, "calls_per_s": done / elapsed,
                              "p50_ms": elapsed / done * 1e3, "p99_ms": elapsed / done * 1e3,
                              "server_cpu_ms_per_call": 0.0,
                              "client_cpu_ms_per_call": (time.process_time() - cpu) / done * 1e3})
    return rows


def memory(n: int, quick: bool) -> list[dict[str, Any]]:
    """Peak RSS of a fresh ``python -m lossd.server`` while it evaluates ``mse_loss`` on
    ``n``-element float32 tensors, above its RSS after a small warm-up call; with the
    default malloc tuning and with ``--no-malloc-tuning``."""
    from lossd.client import Client

    w = workload("mse_loss", n)
    rows = []
    for tuned in (True, False):
        with tempfile.TemporaryDirectory(prefix="lossd-bench-") as data_dir:
            args = ["--port", "0", "--data-dir", data_dir, "--plugins", "none"]
            if not tuned:
                args.append("--no-malloc-tuning")
            with BenchServer.start(*args, module="lossd.server") as server, \
                    Client(server.address, timeout=600) as client:
                small = workload("mse_loss", 100)
                client.evaluate(small.loss, small.y_pred, small.y_true)
                time.sleep(0.3)
                baseline = proc_status_kib(server.pid, "VmRSS") * 1024
                start = time.perf_counter()
                client.evaluate(w.loss, w.y_pred, w.y_true)
                elapsed = time.perf_counter() - start
                peak = proc_status_kib(server.pid, "VmHWM") * 1024
                after = proc_status_kib(server.pid, "VmRSS") * 1024
        rows.append({"malloc_tuning": tuned, "n": n, "payload_bytes": w.payload_bytes, "baseline_bytes": baseline,
                     "peak_bytes": peak, "after_bytes": after, "first_call_s": elapsed,
                     "peak_over_payload": (peak - baseline) / w.payload_bytes})
    return rows


def malloc(tuned: BenchServer, sizes: list[int], quick: bool) -> list[dict[str, Any]]:
    """Echo and EvaluateLoss (mse_loss) on the tuned bench server and on a second one
    started with ``--no-malloc-tuning``, sampled in turn."""
    from lossd.client import Client, build_request

    rows = []
    with BenchServer.start("--no-malloc-tuning") as untuned, \
            Client(tuned.address, timeout=600) as a, Client(untuned.address, timeout=600) as b, \
            Client(tuned.echo_address, timeout=600) as a_echo, Client(untuned.echo_address, timeout=600) as b_echo:
        for n in sizes:
            w = workload("mse_loss", n)
            request = build_request(w.loss, w.y_pred, w.y_true)[0].SerializeToString()
            reply = a.channel.unary_unary(EVALUATE)(request)
            payload = echo_payload(len(request), len(reply))
            calls = {}
            for label, c, e in (("tuned", a, a_echo), ("untuned", b, b_echo)):
                calls[f"{label}_echo"] = functools.partial(e.channel.unary_unary(ECHO), payload)
                calls[f"{label}_evaluate"] = functools.partial(c.channel.unary_unary(EVALUATE), request)
            samples = interleaved(calls, max(3, _reps(n, quick)))
            med = {k: summary(v)["median_ms"] for k, v in samples.items()}
            rows.append({"n": n, **{f"{k}_ms": v for k, v in med.items()},
                         "echo_speedup": med["untuned_echo"] / med["tuned_echo"],
                         "evaluate_speedup": med["untuned_evaluate"] / med["tuned_evaluate"]})
    return rows


def training(server: BenchServer, quick: bool) -> dict[str, Any]:
    """One TrainJob at world_size 1 and at 2 (torch.distributed ranks, gloo, DDP), alternating, through
    the bench server: samples/s as the job reports it (rank 0's training loop, from its first step) and
    the job's wall time from submission (process starts included); medians."""
    from lossd.client import Client

    n = 4096 if quick else 20480
    spec = {
        "name": "bench-scaling", "model": {"mlp": {"hidden": [256, 256]}},
        "data": {"builtin": {"name": "blobs", "params": {"n_samples": n, "n_features": 32, "centers": 10}}},
        "loss": {"name": "cross_entropy"}, "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "epochs": 1, "batch_size": 256, "seed": 1, "step_events_per_second": 0,
    }
    per_s: dict[int, list[float]] = {1: [], 2: []}
    wall: dict[int, list[float]] = {1: [], 2: []}
    with Client(server.address, timeout=600) as client:
        client.train({**spec, "epochs": 1, "data": {"builtin": {"name": "blobs", "params": {"n_samples": 512}}}},
                     progress=False)  # starts the server's worker pool (torch imports) outside the timings
        for _ in range(1 if quick else 3):
            for ws in (1, 2):
                start = time.perf_counter()
                result = client.train(spec, world_size=ws, progress=False)
                wall[ws].append(time.perf_counter() - start)
                assert result.state == "SUCCEEDED", result.message
                per_s[ws].append(result.event.samples_per_second)
    med = {ws: statistics.median(v) for ws, v in per_s.items()}
    return {"samples": n, "batch_size": spec["batch_size"], "hidden": [256, 256], "epochs": 1,
            "samples_per_s": med, "wall_s": {ws: statistics.median(v) for ws, v in wall.items()},
            "ratio": med[2] / med[1], "runs": per_s}


def processes(counts: list[int], clients: int, seconds: float, quick: bool) -> list[dict[str, Any]]:
    """The ``--processes`` prototype: ``n`` bench server processes sharing one port
    (``grpc.so_reuseport`` set deliberately, ``bench._server --reuseport``), loaded by ``clients``
    threads of a client process of its own (``bench._load``): EvaluateLoss (mse_loss, 100 elements)
    and the echo, calls/s and the servers' CPU per call, for each ``n``."""
    import json
    import subprocess
    import sys

    if quick:
        seconds = min(seconds, 1.0)
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(BenchServer.start("--reuseport"))]
        port = servers[0].address.rsplit(":", 1)[1]
        for n in sorted(counts):
            while len(servers) < n:
                servers.append(stack.enter_context(BenchServer.start("--reuseport", "--also-port", port)))
            for what in ("evaluate", "echo"):
                before = sum(cpu_seconds(s.pid) for s in servers)
                out = subprocess.run([sys.executable, "-m", "bench._load", servers[0].address, str(clients),
                                      str(seconds), what], cwd=REPO, capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["processes"] = n
                row["server_cpu_ms_per_call"] = (sum(cpu_seconds(s.pid) for s in servers) - before) / row["calls"] * 1e3
                rows.append(row)
    return rows


def replicas(quick: bool) -> dict[str, Any]:
    """Submit → first event (QUEUED) and submit → RUNNING (claimed, worker started) for a small TrainJob,
    with 1 and with 3 ``lossd serve`` replicas sharing a PostgreSQL job store (started here with the machine's
    initdb/pg_ctl, as the tests do: tests/support/postgres.py); jobs submitted one at a time, round robin
    over the replicas, after a warm-up job on each (worker pools started); medians and p90 in ms.
    ``{"skipped": why}`` where PostgreSQL cannot run here."""
    import contextlib
    import sys
    from pathlib import Path

    from lossd.v1 import training_pb2_grpc
    from lossd.v1 import training_pb2 as pb

    from ._measure import REPO

    sys.path.insert(0, str(REPO / "tests"))
    import grpc
    from google.protobuf import json_format
    from support.postgres import PostgresServer, unavailable_reason
    from support.servers import ServedProcess

    reason = unavailable_reason()
    if reason:
        return {"skipped": reason}
    spec = {"model": {"linear": {}}, "data": {"builtin": {"name": "linear_regression", "params": {"n_samples": 64}}},
            "loss": {"name": "mse"}, "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 1, "batch_size": 16}
    jobs = 6 if quick else 30
    out: dict[str, Any] = {"jobs": jobs}
    db = PostgresServer.start_new()
    try:
        for n in (1, 3):
            url = db.fresh_database()
            with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
                servers = [stack.enter_context(ServedProcess.start(
                    Path(tmp), "--data-dir", str(Path(tmp) / f"r{i}"), env={"LOSSD_JOB_STORE": url}))
                    for i in range(n)]
                stubs = [training_pb2_grpc.TrainingServiceStub(stack.enter_context(grpc.insecure_channel(s.address)))
                         for s in servers]

                def submit(stub: Any) -> tuple[float, float]:
                    request = json_format.ParseDict(spec, pb.TrainJobRequest())
                    start = time.perf_counter()
                    first = running = 0.0
                    for reply in stub.TrainJob(request, timeout=120):
                        now = time.perf_counter() - start
                        first = first or now
                        if reply.event.kind == pb.JOB_EVENT_KIND_STATE and reply.event.state == pb.JOB_STATE_RUNNING:
                            running = now
                    return first, running

                for _ in range(2 * n):  # warm-up: every replica's worker pool (the claim decides who runs)
                    for stub in stubs:
                        submit(stub)
                firsts, runnings = [], []
                for i in range(jobs):
                    first, running = submit(stubs[i % n])
                    firsts.append(first * 1e3)
                    runnings.append(running * 1e3)
                out[str(n)] = {"first_event_ms": {"p50": statistics.median(firsts), "p90": percentile(firsts, 90)},
                               "running_ms": {"p50": statistics.median(runnings), "p90": percentile(runnings, 90)}}
    finally:
        db.destroy()
    return out
