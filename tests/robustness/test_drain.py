"""Graceful drain of ``python -m lossd.server`` on SIGTERM, observed from outside the process:
health turns NOT_SERVING while the listener is still open, new calls are refused with
UNAVAILABLE, the call in flight completes, and the process exits 0 within grace + 1 s.

(Running training jobs checkpointing and ending INTERRUPTED on SIGTERM, then resuming at the
next start: tests/integration/test_training_durability.py.)
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lossd.v1 import lossd_pb2_grpc, training_pb2_grpc
from support.procstat import cpu_seconds, wait_for
from support.servers import ServedProcess
from support.slow_eval import BIG_REPLIES, calibrated_ctc, ctc_request, torch_ctc_value
from support.training import request as train_request
from support.training import small_spec

pytestmark = pytest.mark.slow

#: The grace period the server gets (--grace), and the evaluation time aimed at (well inside it).
GRACE_S = 3.0
EVAL_S = 1.2


def _check(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return reply.status  # type: ignore[no-any-return]


def _refusal(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_sigterm_during_evaluate_loss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ServedProcess.start(tmp_path, "--grace", str(GRACE_S)) as served:
        pid = served.proc.pid
        channel = grpc.insecure_channel(served.address, options=BIG_REPLIES)
        stub = lossd_pb2_grpc.LossServiceStub(channel)
        batch, took = calibrated_ctc(stub, EVAL_S)
        assert took < GRACE_S / 2, f"this machine is too loaded for the test: one evaluation took {took:.1f}s"

        done_at: list[float] = []
        busy = cpu_seconds(pid)
        call = stub.EvaluateLoss.future(ctc_request(batch), timeout=60)
        call.add_done_callback(lambda _: done_at.append(time.monotonic()))
        # SIGTERM once the server is computing (its CPU time grows), not while the request travels.
        assert wait_for(lambda: cpu_seconds(pid) - busy >= 0.1, 30), "the evaluation did not start"
        assert not call.done()
        sent = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)

        # While the call runs: health answers NOT_SERVING on a new connection...
        assert wait_for(lambda: _check(served.address) == health_pb2.HealthCheckResponse.NOT_SERVING, 2)
        assert _check(served.address, "lossd.v1.LossService") == health_pb2.HealthCheckResponse.NOT_SERVING
        # ...and every other new call is refused, saying why.
        with grpc.insecure_channel(served.address) as fresh:
            refused = [
                _refusal(lambda: lossd_pb2_grpc.LossServiceStub(fresh).EvaluateLoss(ctc_request(1), timeout=5)),
                _refusal(lambda: list(training_pb2_grpc.TrainingServiceStub(fresh).TrainJob(
                    train_request(small_spec()), timeout=5))),
            ]
        for error in refused:
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            assert "shutting down" in (error.details() or ""), error.details()
        observed = time.monotonic()
        assert not done_at or done_at[0] > observed, "the call ended before the drain was observed"
        served.proc.send_signal(signal.SIGTERM)  # a second signal changes nothing

        reply = call.result()  # the call in flight completes
        assert served.proc.wait(GRACE_S + 1) == 0
        exited = time.monotonic()
        channel.close()
    with capsys.disabled():
        print(f"\ndrain: ctc_loss batch {batch} took {took:.2f}s; after SIGTERM the call ended at "
              f"{done_at[0] - sent:.2f}s and the process exited at {exited - sent:.2f}s (grace {GRACE_S}s)")
    assert reply.value == pytest.approx(torch_ctc_value(batch), rel=1e-5)
    assert done_at[0] - sent < GRACE_S
    assert exited - sent <= GRACE_S + 1, f"exited {exited - sent:.2f}s after SIGTERM"
    assert any("lossd stopped" in line for line in served.log), "".join(served.log)


def test_sigterm_cancels_what_outlasts_the_grace_period_and_still_exits_in_time(tmp_path: Path) -> None:
    """An evaluation longer than the grace period is cancelled at its end; the thread computing it
    (which nothing can interrupt) does not hold the process past grace + 1 s."""
    grace = 0.3
    with ServedProcess.start(tmp_path, "--grace", str(grace)) as served:
        pid = served.proc.pid
        channel = grpc.insecure_channel(served.address, options=BIG_REPLIES)
        stub = lossd_pb2_grpc.LossServiceStub(channel)
        batch, took = calibrated_ctc(stub, 1.0)
        assert took > 2 * grace
        busy = cpu_seconds(pid)
        call = stub.EvaluateLoss.future(ctc_request(batch), timeout=60)
        assert wait_for(lambda: cpu_seconds(pid) - busy >= 0.1, 30)
        sent = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(grace + 5) == 0
        exited = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            call.result()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        channel.close()
    assert exited - sent <= grace + 1, f"exited {exited - sent:.2f}s after SIGTERM"
    assert any("were cancelled" in line for line in served.log), "".join(served.log)


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
