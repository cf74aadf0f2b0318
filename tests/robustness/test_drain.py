"""Graceful drain of ``python -m lossd.server`` on SIGTERM, observed from outside the process:
health turns NOT_SERVING while the listener is still open, new calls are refused with
UNAVAILABLE, the call in flight completes, and the process exits 0 within grace + 1 s.

(Running training jobs checkpointing and ending INTERRUPTED on SIGTERM, then resuming at the
next start: tests/integration/test_training_durability.py.)
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lossd.v1 import lossd_pb2, lossd_pb2_grpc, training_pb2_grpc
from support.gated_loss import LossGate
from support.procstat import alive, wait_for
from support.servers import ServedProcess
from support.training import request as train_request
from support.training import small_spec

pytestmark = pytest.mark.slow

#: The grace period the server gets (--grace) while the test observes the drain around a call that
#: waits at its gate: ample for a few health checks and refused calls on a loaded machine. It costs
#: nothing when all goes well (the process exits once the call, let through, has ended).
GRACE_S = 10.0
#: A token for the servers that show an unauthenticated peer's reach.
TOKEN = "t0ken-of-the-drain-tests-0123456789"

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _check(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return reply.status  # type: ignore[no-any-return]


def _refusal(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def _torch_value() -> float:
    a = {k: torch.from_numpy(v) for k, v in LossGate.arrays().items()}
    return torch.nn.functional.mse_loss(a["input"], a["target"]).item()


def test_sigterm_during_evaluate_loss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gate = LossGate(tmp_path)
    with ServedProcess.start(tmp_path, "--grace", str(GRACE_S), env=gate.env) as served:
        channel = grpc.insecure_channel(served.address)
        stub = lossd_pb2_grpc.LossServiceStub(channel)
        call = stub.EvaluateLoss.future(gate.request(), timeout=60)
        # SIGTERM once the server computes the call (it waits at the gate), not while the request travels.
        assert gate.wait_entered(30), "the evaluation did not start"
        assert not call.done()
        sent = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)

        # While the call runs: health answers NOT_SERVING on a new connection...
        assert wait_for(lambda: _check(served.address) == NOT_SERVING, 5), "health still SERVING after SIGTERM"
        assert _check(served.address, "lossd.v1.LossService") == NOT_SERVING
        # ...and every other new call is refused, saying why.
        with grpc.insecure_channel(served.address) as fresh:
            refused = [
                _refusal(lambda: lossd_pb2_grpc.LossServiceStub(fresh).EvaluateLoss(gate.request(), timeout=5)),
                _refusal(lambda: list(training_pb2_grpc.TrainingServiceStub(fresh).TrainJob(
                    train_request(small_spec()), timeout=5))),
            ]
        for error in refused:
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            assert "shutting down" in (error.details() or ""), error.details()
        assert not call.done(), "the call ended while it waited at its gate"
        # A second signal changes nothing: the server still drains (it answers, NOT_SERVING) and the
        # call still waits.
        served.proc.send_signal(signal.SIGTERM)
        assert _check(served.address) == NOT_SERVING
        assert alive(served.proc.pid) and not call.done()

        opened = time.monotonic()
        gate.open()
        reply = call.result()  # the call in flight completes
        ended = time.monotonic()
        assert served.proc.wait(GRACE_S + 1) == 0
        exited = time.monotonic()
        channel.close()
    with capsys.disabled():
        print(f"\ndrain: the drain was observed {opened - sent:.2f}s after SIGTERM; the call, let through then, "
              f"ended at {ended - sent:.2f}s and the process exited at {exited - sent:.2f}s (grace {GRACE_S}s)")
    assert reply.value == _torch_value()
    assert ended - sent < GRACE_S
    assert exited - sent <= GRACE_S + 1, f"exited {exited - sent:.2f}s after SIGTERM"
    assert any("lossd stopped" in line for line in served.log), "".join(served.log)


def test_sigterm_cancels_what_outlasts_the_grace_period_and_still_exits_in_time(tmp_path: Path) -> None:
    """An evaluation longer than the grace period (it waits at a gate the test opens only once the
    process has exited) is cancelled at its end; the thread computing it (which nothing can
    interrupt) does not hold the process past grace + 1 s."""
    grace = 0.3
    gate = LossGate(tmp_path)
    with ServedProcess.start(tmp_path, "--grace", str(grace), env=gate.env) as served:
        channel = grpc.insecure_channel(served.address)
        stub = lossd_pb2_grpc.LossServiceStub(channel)
        call = stub.EvaluateLoss.future(gate.request(), timeout=60)
        assert gate.wait_entered(30), "the evaluation did not start"
        sent = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(grace + 5) == 0
        exited = time.monotonic()
        gate.open()  # too late: nothing is left to let through
        with pytest.raises(grpc.RpcError) as info:
            call.result()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        channel.close()
    assert exited - sent <= grace + 1, f"exited {exited - sent:.2f}s after SIGTERM"
    assert any("were cancelled" in line for line in served.log), "".join(served.log)
    # the cancelled call's handler ends before serve() returns: asyncio.run cancelled it, and gRPC printed a
    # traceback of its own (asyncio.CancelledError, after "lossd stopped")
    assert "Traceback" not in "".join(served.log), "".join(served.log)


def test_sigterm_while_a_worker_plans_holds_the_grace_period(tmp_path: Path) -> None:
    """A worker still planning a large job (generating 2·10^7 feature values, seconds) does not look at
    its flags: on SIGTERM it exits at once (nothing to checkpoint yet), the job is INTERRUPTED, and the
    process exits 0 within grace + 1 s."""
    grace = 0.5
    big = small_spec(model={"linear": {}}, metrics=[], loss={"name": "mse_loss"}, detach=True,
                     data={"builtin": {"name": "linear_regression",
                                       "params": {"n_samples": 500_000, "n_features": 40}}})
    with ServedProcess.start(tmp_path, "--grace", str(grace), "--data-dir", str(tmp_path / "data")) as served:
        with grpc.insecure_channel(served.address) as channel:
            stub = training_pb2_grpc.TrainingServiceStub(channel)
            job_id = next(iter(stub.TrainJob(train_request(big), timeout=120))).event.job_id
        assert wait_for(lambda: any(f"job {job_id} started in worker pid" in line for line in list(served.log)),
                        30, 0.01)
        sent = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(grace + 10) == 0
        exited = time.monotonic()
    assert exited - sent <= grace + 1, f"exited {exited - sent:.2f}s after SIGTERM (grace {grace}s)"


def test_an_idle_reflection_stream_does_not_hold_the_drain(tmp_path: Path) -> None:
    """grpcurl holds its reflection stream open, idle, between questions: a drain does not wait for it
    (it would hold every shutdown for the whole grace period), and the stream ends with the server."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    grace = 8.0
    done = threading.Event()

    def questions() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        done.wait(60)  # then idle, the stream left open

    with ServedProcess.start(tmp_path, "--grace", str(grace)) as served, \
            grpc.insecure_channel(served.address) as channel:
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(questions(), timeout=60)
        try:
            assert next(stream).list_services_response.service  # the stream is open and answered
            sent = time.monotonic()
            served.proc.send_signal(signal.SIGTERM)
            assert served.proc.wait(grace + 5) == 0
            assert time.monotonic() - sent < grace / 2, "the drain waited for the idle reflection stream"
            with pytest.raises(grpc.RpcError):
                next(stream)
        finally:
            done.set()
    assert not any("were cancelled" in line for line in served.log), "".join(served.log)


def _small_item(item_id: str) -> lossd_pb2.EvaluateLossStreamRequest:
    def tensor(values: list[float]) -> lossd_pb2.Tensor:
        return lossd_pb2.Tensor(dtype="float32", shape=[len(values)], values=values)

    return lossd_pb2.EvaluateLossStreamRequest(id=item_id, request=lossd_pb2.EvaluateLossRequest(
        loss="mse_loss", inputs={"input": tensor([1.0, 2.0]), "target": tensor([0.0, 0.0])}))


def _held_open(first: list[lossd_pb2.EvaluateLossStreamRequest],
               more: queue.Queue[lossd_pb2.EvaluateLossStreamRequest | None],
               ) -> Iterator[lossd_pb2.EvaluateLossStreamRequest]:
    """``first``, then what the test puts in ``more``, the stream left open (idle) until it puts ``None``."""
    yield from first
    while (item := more.get()) is not None:
        yield item


@pytest.mark.parametrize("attempt", range(3))  # the traceback at the exit came 4 times in 5
def test_an_idle_evaluate_loss_stream_ends_unavailable_and_does_not_hold_the_drain(tmp_path: Path,
                                                                                    attempt: int) -> None:
    """An EvaluateLossStream open and idle, its items answered, at SIGTERM: it ends ``UNAVAILABLE`` saying the
    server is shutting down, and the process exits 0 at once. It held the drain for the whole grace period,
    was then cancelled, and gRPC often printed a traceback for it after "lossd stopped" (a plain-text
    ``asyncio.CancelledError`` among the JSON lines: asyncio.run cancelled its task as serve() returned)."""
    grace = 8.0
    more: queue.Queue[lossd_pb2.EvaluateLossStreamRequest | None] = queue.Queue()
    with ServedProcess.start(tmp_path, "--grace", str(grace), "--log-format", "json", "--plugins", "none") as served, \
            grpc.insecure_channel(served.address) as channel:
        stream = lossd_pb2_grpc.LossServiceStub(channel).EvaluateLossStream(
            _held_open([_small_item("1")], more), timeout=60)
        try:
            assert next(stream).id == "1"  # answered; the stream stays open, idle
            sent = time.monotonic()
            served.proc.send_signal(signal.SIGTERM)
            code = served.proc.wait(grace + 5)
            exited = time.monotonic()
            with pytest.raises(grpc.RpcError) as ended:
                next(stream)
        finally:
            more.put(None)
    assert code == 0
    assert exited - sent < grace / 2, f"exited {exited - sent:.2f}s after SIGTERM: the drain waited for the stream"
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
    assert "shutting down" in (ended.value.details() or ""), ended.value.details()
    out = "".join(served.log)
    assert "Traceback" not in out, out
    for line in out.splitlines():
        json.loads(line)  # every line, to the last, is JSON
    assert any("lossd stopped" in line for line in served.log), out
    assert not any("were cancelled" in line for line in served.log), out


def test_an_evaluate_loss_stream_answers_its_items_in_flight_before_it_ends(tmp_path: Path) -> None:
    """SIGTERM while a stream's item computes (it waits at its gate): the stream is not ended under it; once the
    item is answered the stream ends ``UNAVAILABLE``, and the process exits 0 without waiting for the grace."""
    gate = LossGate(tmp_path)
    more: queue.Queue[lossd_pb2.EvaluateLossStreamRequest | None] = queue.Queue()
    gated = lossd_pb2.EvaluateLossStreamRequest(id="2", request=gate.request())
    with ServedProcess.start(tmp_path, "--grace", str(GRACE_S), env=gate.env) as served, \
            grpc.insecure_channel(served.address) as channel:
        stream = lossd_pb2_grpc.LossServiceStub(channel).EvaluateLossStream(
            _held_open([_small_item("1"), gated], more), timeout=60)
        try:
            assert next(stream).id == "1"
            assert gate.wait_entered(30), "the gated item did not start"
            sent = time.monotonic()
            served.proc.send_signal(signal.SIGTERM)
            assert wait_for(lambda: _check(served.address) == NOT_SERVING, 5), "health still SERVING after SIGTERM"
            assert alive(served.proc.pid), "the drain did not wait for the item in flight"
            gate.open()
            reply = next(stream)  # the item in flight is answered...
            with pytest.raises(grpc.RpcError) as ended:  # ...then the stream ends
                next(stream)
            code = served.proc.wait(GRACE_S + 1)
            exited = time.monotonic()
        finally:
            more.put(None)
    assert reply.id == "2" and reply.response.value == _torch_value(), reply
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
    assert "shutting down" in (ended.value.details() or ""), ended.value.details()
    assert code == 0
    assert exited - sent < GRACE_S, f"exited {exited - sent:.2f}s after SIGTERM (grace {GRACE_S}s)"
    assert not any("were cancelled" in line for line in served.log), "".join(served.log)


def test_a_signal_as_soon_as_it_says_listening_drains_it(tmp_path: Path) -> None:
    """Tools read "listening on" as ready; the signal handlers were installed only after that line (and the
    metrics endpoint's): a SIGTERM sent as the line is read killed the process (-15), undrained."""
    import os
    import subprocess
    import sys

    for run in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "lossd.server", "--port", "0", "--metrics-port", "0", "--plugins", "none",
             "--data-dir", str(tmp_path / str(run))], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "LOSSD_DEVICE": "cpu"})
        assert proc.stdout is not None
        out = []
        for line in proc.stdout:  # the signal goes the moment the line is read, as a supervisor's would
            out.append(line)
            if "listening on" in line:
                proc.send_signal(signal.SIGTERM)
                break
        out += proc.stdout.readlines()
        assert proc.wait(15) == 0 and "lossd stopped" in "".join(out), "".join(out)


@pytest.mark.parametrize("world_size", [1, 2])
def test_ctrl_c_to_the_process_group_interrupts_a_job_at_its_step_without_a_traceback(tmp_path: Path,
                                                                                      world_size: int) -> None:
    """A terminal's Ctrl-C sends SIGINT to the whole process group: the job's worker too. It raised
    KeyboardInterrupt (a raw traceback, not JSON) and died before the server's interrupt reached it, so the
    job lost its step's checkpoint; with world_size 2, torch's launcher in the worker turned it into an error
    and the job FAILED. The worker leads a process group of its own now: the drain interrupts the job at its
    step."""
    import os
    import subprocess
    import sys

    from google.protobuf import json_format

    from lossd.v1 import training_pb2

    spec = small_spec(epochs=10000, batch_size=10, metrics=[], step_events_per_second=0, world_size=world_size)
    # its own TMPDIR, short (a socket's path is at most 107 bytes), to see what the server leaves there
    scratch = Path(tempfile.mkdtemp(prefix="lossd-tmp-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LOSSD_DEVICE": "cpu", "TMPDIR": str(scratch)}
    cmd = [sys.executable, "-m", "lossd.server", "--port", "0", "--plugins", "none", "--log-format", "json",
           "--max-epochs", "100000", "--data-dir", str(tmp_path / "data")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)  # its own process group, as a terminal's foreground job
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "listening on" in line:
            break
    address = json.loads(lines[-1])["message"].rsplit(" ", 1)[1]
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        with grpc.insecure_channel(address) as channel:
            stub = training_pb2_grpc.TrainingServiceStub(channel)
            request = json_format.ParseDict({**spec, "detach": True}, training_pb2.TrainJobRequest())
            job_id = next(iter(stub.TrainJob(request, timeout=60))).event.job_id
            for reply in stub.WatchJob(training_pb2.WatchJobRequest(job_id=job_id), timeout=60):
                if reply.event.kind == training_pb2.JOB_EVENT_KIND_EPOCH:
                    break
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0
        # multiprocessing's directory (the forkserver's socket), which os._exit kept: one per server that ran a job
        assert not list(scratch.glob("pymp-*")), list(scratch.iterdir())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)
    reader.join(5)
    assert not [line for line in lines if not line.startswith("{")], "".join(lines)
    assert "Traceback" not in "".join(lines)
    with ServedProcess.start(tmp_path, "--data-dir", str(tmp_path / "data"), "--plugins", "none",
                             "--max-epochs", "100000") as served, grpc.insecure_channel(served.address) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        seen = []
        for reply in stub.WatchJob(training_pb2.WatchJobRequest(job_id=job_id), timeout=60):
            seen.append(reply.event)
            if reply.event.state == training_pb2.JOB_STATE_RUNNING and any(
                    e.state == training_pb2.JOB_STATE_INTERRUPTED for e in seen):
                break
        stub.CancelJob(training_pb2.CancelJobRequest(job_id=job_id), timeout=30)
    interrupted = [e.message for e in seen if e.state == training_pb2.JOB_STATE_INTERRUPTED]
    assert interrupted and interrupted[-1].startswith("server shutting down: checkpoint at step"), interrupted


def test_a_request_that_stops_grpcs_server_is_served_again_from_a_new_one(tmp_path: Path) -> None:
    """grpcio's server loop ends on a method name that is not UTF-8 (grpcio 1.85; anyone who reaches the port
    can send one, before any interceptor or token check): its listener closed and the process went on,
    serving nothing, until something killed it (an audit, 2026-12-06). lossd serves again from a new gRPC
    server on the same port, with the same services and jobs, each time; a SIGTERM still drains it."""
    from support.raw_http2 import send_headers_only

    import re
    import urllib.request

    with ServedProcess.start(tmp_path, "--data-dir", str(tmp_path / "d"), "--plugins", "none", "--metrics-port", "0",
                             env={"LOSSD_TOKEN": TOKEN}) as served, grpc.insecure_channel(served.address) as held:
        assert wait_for(lambda: "lossd metrics on http" in "".join(served.log), 10), served.report()
        metrics = re.search(r"lossd metrics on (http://\S+)", "".join(served.log)).group(1)  # type: ignore[union-attr]
        host, port = served.address.rsplit(":", 1)
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        for attempt in range(1, 4):
            # A call left open on the old server (a health Watch needs no token) held its replacement, with the
            # port closed, for as long as it lasted (a review, 2026-12-06): it is ended instead.
            watch = health_pb2_grpc.HealthStub(held).Watch(health_pb2.HealthCheckRequest(), timeout=120)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            send_headers_only(host, int(port), b"/\xff/m")
            assert wait_for(lambda: "".join(served.log).count("serving again from a new one") == attempt, 10, 0.05), \
                served.report()
            with pytest.raises(grpc.RpcError):
                next(watch)
            with grpc.insecure_channel(served.address) as channel:
                reply = lossd_pb2_grpc.LossServiceStub(channel).EvaluateLoss(lossd_pb2.EvaluateLossRequest(
                    loss="mse_loss", inputs={"input": lossd_pb2.Tensor(dtype="float32", shape=[2], values=[1, 2]),
                                             "target": lossd_pb2.Tensor(dtype="float32", shape=[2], values=[0, 0])}),
                    metadata=metadata, timeout=30, wait_for_ready=True)
                assert reply.value == 2.5
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
                assert health.status == health_pb2.HealthCheckResponse.SERVING
        with urllib.request.urlopen(metrics, timeout=10) as scrape:
            assert "lossd_grpc_servers_replaced_total 3.0" in scrape.read().decode()
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(GRACE_S + 5) == 0, served.report()
        assert "the gRPC server stopped by itself (its serving loop ended: see the error gRPC logged above, 3 times " \
            "in 60 s); serving again from a new one" in "".join(served.log)


def test_a_grpc_server_that_keeps_stopping_is_replaced_after_growing_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stops close together delay the next server (doubling, at most a second) rather than make lossd give up:
    a count of stops made it exit 1 after 11 bad requests sent within 0.2 s (an audit, 2026-12-06). Only a
    server that cannot be made ends the serving (serve() then drains and exits 1, for a supervisor)."""
    import asyncio

    from lossd.server import _app

    class Stopping:
        async def wait_for_termination(self) -> None:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

        async def stop(self, grace: float | None) -> None:
            pass

    monkeypatch.setattr(_app, "REPLACE_DELAY_S", 0.001)
    monkeypatch.setattr(_app, "MAX_REPLACE_DELAY_S", 0.004)

    async def run(fails_after: int, stop_after: int) -> tuple[str, int, list[float]]:
        stop = asyncio.Event()

        class Server:
            grpc_server = Stopping()
            port = 1
            made = 0
            times: list[float] = []

            async def replace_grpc_server(self) -> None:
                self.times.append(asyncio.get_running_loop().time())
                if self.made == fails_after:
                    raise RuntimeError("Failed to bind to address")
                self.made += 1
                if self.made == stop_after:
                    stop.set()
                self.grpc_server = Stopping()

        server = Server()
        said = await _app._serve_until_stopped(server, stop)  # type: ignore[arg-type]
        return said, server.made, server.times

    said, made, times = asyncio.run(run(fails_after=10**6, stop_after=15))
    assert (said, made) == ("", 15)  # 15 stops within the window: still serving, until the signal
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.001 and min(gaps[3:]) >= 0.004 * 0.9, gaps  # 1, 2, 4 ms, then at most 4
    assert asyncio.run(run(fails_after=2, stop_after=10**6))[:2] == ("and could not be replaced", 2)
