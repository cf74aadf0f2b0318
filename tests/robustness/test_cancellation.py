"""Client cancellation and deadline expiry mid-call free the server's work: no call, thread,
process or job watcher is left behind.

Two views: a ``python -m lossd.server`` process seen from ``/proc`` (its threads and child
processes return to their baseline), and a server in this process, whose drain gate
(calls in flight) and job manager (event streams being served) can be read directly.
Training jobs survive a dropped stream by design: the job goes on and ends SUCCEEDED.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from lossd.v1 import lossd_pb2, lossd_pb2_grpc
from lossd.v1 import training_pb2 as pb
from lossd.v1 import training_pb2_grpc
from support.procstat import children, settle, threads, wait_for
from support.servers import ServedProcess, scratch_dir, serve_in_thread
from support.slow_eval import BIG_REPLIES, ctc_request
from support.training import request, small_spec

pytestmark = pytest.mark.slow

#: ctc_loss batch of each evaluation: a few tenths of a second here, far longer than DEADLINE_S.
BATCH = 6
DEADLINE_S = 0.05


@contextlib.contextmanager
def in_process_server() -> Iterator[tuple[str, Any]]:
    """A server in this process, and its :class:`lossd.server.LossdServer` (``gate``, ``jobs``)."""
    from lossd.server import ServerConfig, create_server

    made: dict[str, Any] = {}

    async def build() -> Any:
        config = ServerConfig(host="127.0.0.1", port=0, device="cpu", plugins="none", workers=2,
                              data_dir=data_dir)
        made["server"] = await create_server(config)
        return made["server"]

    with scratch_dir("lossd-cancel-") as data_dir, serve_in_thread(build) as port:
        yield f"127.0.0.1:{port}", made["server"]


def _stream_items(batch: int, stop: threading.Event) -> Iterator[lossd_pb2.EvaluateLossStreamRequest]:
    """Slow items until ``stop`` is set (a client that keeps its stream open)."""
    k = 0
    while not stop.is_set():
        yield lossd_pb2.EvaluateLossStreamRequest(id=str(k), request=ctc_request(batch))
        k += 1
        stop.wait(0.05)


def _cancel_everything(address: str, batch: int = BATCH) -> None:
    """A unary call past its deadline, then a stream cancelled after its first reply."""
    with grpc.insecure_channel(address, options=BIG_REPLIES) as channel:
        stub = lossd_pb2_grpc.LossServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.EvaluateLoss(ctc_request(batch), timeout=DEADLINE_S)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        stop = threading.Event()
        call = stub.EvaluateLossStream(_stream_items(batch, stop), timeout=60)
        first = next(call)
        assert first.id == "0" and first.HasField("response")
        call.cancel()
        stop.set()
        with pytest.raises(grpc.RpcError) as info:
            next(call)
        assert info.value.code() == grpc.StatusCode.CANCELLED


def test_cancelled_evaluations_leave_no_thread_or_process_behind(robust_server: ServedProcess) -> None:
    pid = robust_server.proc.pid
    _cancel_everything(robust_server.address)  # once first: the thread pools reach their size
    time.sleep(2)  # what was computing when its call ended finishes (torch cannot be interrupted)
    base_threads, base_children = threads(pid), children(pid)
    for _ in range(2):
        _cancel_everything(robust_server.address)
    # Nothing is left: the same threads and child processes as before.
    assert settle(lambda: threads(pid), base_threads, 30) <= base_threads, (threads(pid), base_threads)
    assert wait_for(lambda: children(pid) <= base_children, 10), (children(pid), base_children)
    assert robust_server.proc.poll() is None


def test_cancelled_calls_and_streams_end_on_the_server() -> None:
    """In-process: the drain gate counts no call in flight, the job manager serves no stream,
    and the jobs whose streams were dropped go on to SUCCEEDED."""
    with in_process_server() as (address, server):
        gate, jobs = server.gate, server.jobs
        with grpc.insecure_channel(address, options=BIG_REPLIES) as channel:
            _cancel_everything(address)
            training = training_pb2_grpc.TrainingServiceStub(channel)
            spec = small_spec(epochs=4, step_events_per_second=100)  # well under 1 s of training, many events

            # TrainJob's own stream, dropped after two events.
            call = training.TrainJob(request(spec), timeout=60)
            trained = [next(call).event for _ in range(2)]
            call.cancel()
            # WatchJob of a detached job, dropped after its first event; a second watcher stays to the end.
            detached = list(training.TrainJob(request({**spec, "detach": True}), timeout=60))[0].event.job_id
            watch = training.WatchJob(pb.WatchJobRequest(job_id=detached), timeout=60)
            assert next(watch).event.job_id == detached
            watch.cancel()
            done: queue.Queue[pb.JobEvent] = queue.Queue()
            threading.Thread(target=lambda: done.put(list(training.WatchJob(
                pb.WatchJobRequest(job_id=detached), timeout=120))[-1].event), daemon=True).start()

            assert wait_for(lambda: jobs.watchers == 1, 10), jobs.watchers  # only the one still listening
            final = done.get(timeout=120)
            assert final.state == pb.JOB_STATE_SUCCEEDED, final.message
            def job() -> pb.Job:
                return training.GetJob(pb.GetJobRequest(job_id=trained[0].job_id), timeout=10).job

            ended = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)
            assert wait_for(lambda: job().state in ended, 120, interval=0.2)
            assert job().state == pb.JOB_STATE_SUCCEEDED, job().message  # the job outlived its stream
            assert wait_for(lambda: jobs.watchers == 0, 10), jobs.watchers
            assert wait_for(lambda: gate.in_flight == 0, 30), gate.in_flight
