"""The metrics port under 1,000 idle connections: the server's threads stay bounded, gRPC keeps
serving, idle connections are closed after the read timeout, and /metrics answers again once they
are gone. Bounded: one round of connections, about 10 s."""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from lossd.server._metrics import READ_TIMEOUT_S
from lossd.v1 import lossd_pb2
from support.procstat import threads, wait_for
from support.servers import ServedProcess

pytestmark = pytest.mark.slow

IDLE = 1000


def _evaluate(channel: grpc.Channel) -> float:
    request = lossd_pb2.EvaluateLossRequest(loss="mse")
    request.inputs["input"].CopyFrom(lossd_pb2.Tensor(dtype="float32", shape=[2], values=[0.5, 2.0]))
    request.inputs["target"].CopyFrom(lossd_pb2.Tensor(dtype="float32", shape=[2], values=[1.0, 1.0]))
    call = channel.unary_unary("/lossd.v1.LossService/EvaluateLoss",
                               response_deserializer=lossd_pb2.EvaluateLossResponse.FromString)
    return float(call(request.SerializeToString(), timeout=30).value)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def test_idle_metrics_connections_cost_no_threads_and_time_out(tmp_path: Path) -> None:
    with ServedProcess.start(tmp_path, "--data-dir", str(tmp_path / "data"), "--plugins", "none",
                             "--metrics-port", "0") as served, grpc.insecure_channel(served.address) as channel:
        found: list[int] = []

        def metrics_line() -> bool:
            found.extend(int(m.group(1)) for line in list(served.log)
                         if (m := re.search(r"metrics on http://\S+:(\d+)/", line)))
            return bool(found)
        assert wait_for(metrics_line, 30, 0.05), "".join(served.log)
        port = found[0]
        assert "grpc_server_started_total" in _scrape(port)
        assert _evaluate(channel) == 0.625
        baseline = threads(served.proc.pid)
        idle = []
        try:
            for _ in range(IDLE):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            time.sleep(0.5)
            assert threads(served.proc.pid) <= baseline + 2, (baseline, threads(served.proc.pid))
            for _ in range(20):  # gRPC serves meanwhile
                assert _evaluate(channel) == 0.625
            # The ones the endpoint kept are closed by the read timeout (the others at once).
            idle[0].settimeout(READ_TIMEOUT_S + 10)
            start = time.perf_counter()
            assert idle[0].recv(1) == b""
            assert time.perf_counter() - start < READ_TIMEOUT_S + 5
            assert wait_for(lambda: _scrape_ok(port), READ_TIMEOUT_S + 10, 0.2), "/metrics did not answer again"
        finally:
            for s in idle:
                s.close()
        assert "grpc_server_handled_total" in _scrape(port)
        assert threads(served.proc.pid) <= baseline + 2
        assert served.proc.poll() is None


def _scrape_ok(port: int) -> bool:
    try:
        return "lossd_build_info" in _scrape(port)
    except OSError:
        return False
