"""Prometheus metrics of a lossd server, served over HTTP on their own port.

Off by default; ``lossd serve --metrics-port 9464`` (env ``LOSSD_METRICS_PORT``)
turns them on and needs ``pip install 'lossd[metrics]'`` (prometheus-client).
Each server gets its own registry, so several servers in one process (tests)
do not mix their numbers.

The gRPC metrics follow go-grpc-prometheus' names, so existing dashboards fit:

=====================================  =====================================================
``grpc_server_started_total``          RPCs started, by type, service, method
``grpc_server_handled_total``          RPCs finished, by type, service, method, status code
``grpc_server_handling_seconds``       latency histogram, by type, service, method, code
``grpc_server_msg_received_total``     messages received (stream items count one by one)
``grpc_server_msg_sent_total``         messages sent
``lossd_rpc_received_bytes_total``     serialized request bytes, by service and method
``lossd_rpc_sent_bytes_total``         serialized reply bytes, by service and method
``lossd_evaluations_total``            evaluations by canonical loss name and status code
                                       (``objective`` for composite objectives, ``unknown``
                                       for names the registry does not know)
``lossd_jobs``                         training jobs by state (QUEUED, RUNNING, ...)
``lossd_job_steps_total``              optimizer steps done by training jobs: the step
                                       rate is ``rate(lossd_job_steps_total[1m])``
``lossd_build_info``                   version (a constant 1 with a label)
=====================================  =====================================================

The training engine reports through two functions that do nothing while no
server with metrics is running: :func:`set_jobs_by_state` and
:func:`add_job_steps`.

>>> m = Metrics()
>>> m.evaluations.labels(loss="mse_loss", code="OK").inc()
>>> add_job_steps(3); set_jobs_by_state({"RUNNING": 1, "QUEUED": 2})
>>> text = m.exposition()
>>> 'lossd_evaluations_total{code="OK",loss="mse_loss"} 1.0' in text
True
>>> 'lossd_job_steps_total 3.0' in text, 'lossd_jobs{state="QUEUED"} 2.0' in text
(True, True)
>>> m.close()
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

from .. import __version__
from ..v1 import training_pb2

__all__ = ["METRICS_EXTRA_HINT", "Metrics", "set_jobs_by_state", "add_job_steps"]

METRICS_EXTRA_HINT = "metrics need prometheus-client: pip install 'lossd[metrics]'"

#: Latency buckets in seconds: sub-millisecond evaluations up to minutes-long job streams.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)

_RPC = ("grpc_type", "grpc_service", "grpc_method")

#: Job states as ``lossd_jobs`` labels them: JobState names without the JOB_STATE_ prefix.
JOB_STATES = tuple(n.removeprefix("JOB_STATE_") for n in training_pb2.JobState.keys() if n != "JOB_STATE_UNSPECIFIED")

#: Every live Metrics, for the job hooks (normally one: the running server's).
_LIVE: weakref.WeakSet[Metrics] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


class Metrics:
    """The collectors of one server and, after :meth:`serve`, their HTTP endpoint."""

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ModuleNotFoundError as e:
            raise RuntimeError(METRICS_EXTRA_HINT) from e
        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.started = prom.Counter("grpc_server_started_total", "RPCs started on the server.", _RPC, registry=r)
        self.handled = prom.Counter(
            "grpc_server_handled_total", "RPCs completed on the server, whatever their status.",
            (*_RPC, "grpc_code"), registry=r)
        self.latency = prom.Histogram(
            "grpc_server_handling_seconds", "Time from the start of an RPC to its end (status sent).",
            (*_RPC, "grpc_code"), buckets=LATENCY_BUCKETS, registry=r)
        self.msg_received = prom.Counter(
            "grpc_server_msg_received_total", "Messages received from clients.", _RPC, registry=r)
        self.msg_sent = prom.Counter("grpc_server_msg_sent_total", "Messages sent to clients.", _RPC, registry=r)
        self.bytes_received = prom.Counter(
            "lossd_rpc_received_bytes_total", "Serialized request message bytes.",
            ("grpc_service", "grpc_method"), registry=r)
        self.bytes_sent = prom.Counter(
            "lossd_rpc_sent_bytes_total", "Serialized reply message bytes.",
            ("grpc_service", "grpc_method"), registry=r)
        self.evaluations = prom.Counter(
            "lossd_evaluations_total", "Loss evaluations (EvaluateLoss calls and stream items).",
            ("loss", "code"), registry=r)
        self.jobs = prom.Gauge("lossd_jobs", "Training jobs by state.", ("state",), registry=r)
        for state in JOB_STATES:
            self.jobs.labels(state=state).set(0)
        self.job_steps = prom.Counter(
            "lossd_job_steps_total", "Optimizer steps done by training jobs.", registry=r)
        prom.Info("lossd_build", "lossd version.", registry=r).info({"version": __version__})
        self._http: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        with _LIVE_LOCK:
            _LIVE.add(self)

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0: ephemeral) in a daemon thread; the bound port."""
        addr = host.strip("[]")  # gRPC's "[::]" is the HTTP server's "::"
        try:
            self._http, self._thread = self._prom.start_http_server(port, addr=addr, registry=self.registry)
        except OSError as e:
            raise OSError(f"could not serve metrics on {host}:{port} (--metrics-port): {e.strerror or e}") from e
        self.port = int(self._http.server_port)
        return self.port

    def exposition(self) -> str:
        """The metrics in Prometheus' text format (what ``/metrics`` answers)."""
        return str(self._prom.generate_latest(self.registry).decode())

    def set_jobs(self, counts: Mapping[int, int] | Mapping[str, int]) -> None:
        """Set ``lossd_jobs``: every state to its count in ``counts``, 0 when absent."""
        given = {_state_name(k): n for k, n in counts.items()}
        for state in dict.fromkeys((*JOB_STATES, *given)):
            self.jobs.labels(state=state).set(given.get(state, 0))

    def close(self) -> None:
        """Stop the HTTP endpoint (if serving) and stop receiving job hooks."""
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


def _state_name(state: str | int) -> str:
    name = training_pb2.JobState.Name(state) if isinstance(state, int) else str(state)
    return name.removeprefix("JOB_STATE_")


def set_jobs_by_state(counts: Mapping[int, int] | Mapping[str, int]) -> None:
    """For the training engine: how many jobs are in each state.

    Keys are JobState numbers or names, with or without the ``JOB_STATE_``
    prefix (``{"RUNNING": 1}``, ``{training_pb2.JOB_STATE_RUNNING: 1}``);
    states absent from ``counts`` are set to 0. Call it whenever a job changes
    state. A no-op while no server has metrics on.
    """
    with _LIVE_LOCK:
        live = list(_LIVE)
    for m in live:
        m.set_jobs(counts)


def add_job_steps(n: int) -> None:
    """For the training engine: ``n`` more optimizer steps were done. A no-op without metrics."""
    if n <= 0:
        return
    with _LIVE_LOCK:
        live = list(_LIVE)
    for m in live:
        m.job_steps.inc(n)
