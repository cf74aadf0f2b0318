"""Prometheus metrics of a lossd server, served over HTTP on their own port.

Off by default; ``lossd serve --metrics-port 9464`` (env ``LOSSD_METRICS_PORT``)
turns them on and needs prometheus-client (``pip install '.[metrics]'`` in the lossd clone).
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
``lossd_batch_window_calls_total``     small EvaluateLoss calls under ``--batch-window-us``,
                                       by ``way``: ``at_once`` (nobody to wait for) or
                                       ``waited`` (in a group)
``lossd_batch_window_groups_total``    the groups the waiting calls formed, one torch
                                       call each (waited calls ÷ groups: the mean group)
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

The ``/metrics`` endpoint is lossd's own small HTTP server (:class:`MetricsEndpoint`), not
prometheus_client's, which starts a thread per connection and never times an idle one out
(900 idle connections exhausted a server's threads): one thread with an asyncio loop, at most
:data:`MAX_CONNECTIONS` connections at once (more are closed at once), each closed when its
request has not arrived within :data:`READ_TIMEOUT_S` seconds or is larger than 16 KiB; one
request per connection (``Connection: close``).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from .. import __version__
from .._settings import SettingError
from ..v1 import training_pb2

__all__ = ["METRICS_EXTRA_HINT", "Metrics", "set_jobs_by_state", "add_job_steps", "count_grpc_server_replaced"]

METRICS_EXTRA_HINT = ("--metrics-port (env LOSSD_METRICS_PORT): metrics need prometheus-client, which is not "
                      "installed: pip install prometheus-client (or pip install '.[metrics]' in the lossd clone)")

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
            raise SettingError(METRICS_EXTRA_HINT) from e
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
        self.grpc_servers_replaced = prom.Counter(
            "lossd_grpc_servers_replaced_total", "gRPC servers that stopped by themselves (grpcio's serving loop "
            "ended on a request) and were replaced by a new one on the same port.", registry=r)
        prom.Info("lossd_build", "lossd version.", registry=r).info({"version": __version__})
        self._http: MetricsEndpoint | None = None
        self.port: int | None = None
        with _LIVE_LOCK:
            _LIVE.add(self)

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0: ephemeral) in a daemon thread; the bound port."""
        addr = host.strip("[]")  # gRPC's "[::]" is the HTTP server's "::"
        try:
            self._http = MetricsEndpoint(addr, port, self._scrape)
        except OSError as e:
            raise OSError(f"could not serve metrics on {host}:{port} (--metrics-port): {e.strerror or e}") from e
        self.port = self._http.port
        return self.port

    def _scrape(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST

    def exposition(self) -> str:
        """The metrics in Prometheus' text format (what ``/metrics`` answers)."""
        return str(self._prom.generate_latest(self.registry).decode())

    def watch_batcher(self, batcher: Any) -> None:
        """Export ``batcher``'s counters (a :class:`~lossd.server.rpc.DynamicBatcher`: ``alone``,
        ``calls``, ``groups``) as ``lossd_batch_window_*``, read at each scrape: nothing per call."""
        self.registry.register(_BatcherCollector(batcher, self._prom.metrics_core.CounterMetricFamily))

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
            self._http.close()
            self._http = None


class _BatcherCollector:
    """The dynamic batcher's counters as Prometheus counters, read when scraped."""

    def __init__(self, batcher: Any, family: Any) -> None:
        self._batcher = batcher
        self._family = family  # prometheus_client's CounterMetricFamily (the metrics extra)

    def collect(self) -> Any:
        b, family = self._batcher, self._family
        calls = family(
            "lossd_batch_window_calls", "Small EvaluateLoss calls under --batch-window-us: evaluated at once "
            "(nobody to wait for) or waited in a group.", labels=["way"])
        calls.add_metric(["at_once"], b.alone)
        calls.add_metric(["waited"], b.calls)
        yield calls
        yield family("lossd_batch_window_groups", "Groups of waiting calls evaluated, one torch call "
                                  "each (waited calls / groups: the mean group).", value=b.groups)


#: Connections the metrics endpoint serves at once; more are closed as they arrive.
MAX_CONNECTIONS = 64
#: Seconds a connection may take to send its request; then it is closed.
READ_TIMEOUT_S = 5.0
#: Largest request (line and headers) the endpoint reads.
MAX_REQUEST_BYTES = 16 * 1024


class MetricsEndpoint:
    """``GET /metrics`` over HTTP/1.1 on its own thread and event loop, with bounded connections and a
    read timeout (see the module docstring); ``scrape()`` gives the body and its content type.

    >>> import urllib.request
    >>> endpoint = MetricsEndpoint("127.0.0.1", 0, lambda: (b"up 1\\n", "text/plain"))
    >>> urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=10).read()
    b'up 1\\n'
    >>> endpoint.close()
    """

    def __init__(self, host: str, port: int, scrape: Any, max_connections: int = MAX_CONNECTIONS,
                 read_timeout_s: float = READ_TIMEOUT_S) -> None:
        self._scrape = scrape
        self._max = max_connections
        self._timeout = read_timeout_s
        self._open = 0
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._error: BaseException | None = None
        self.port = 0
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(host, port, started), name="lossd-metrics",
                                        daemon=True)
        self._thread.start()
        started.wait()
        if self._error is not None:
            self._thread.join(5)
            self._loop.close()
            raise self._error

    def _run(self, host: str, port: int, started: threading.Event) -> None:
        """The endpoint's thread: bind (reporting an error to ``__init__``), then serve until closed."""
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, host or None, port, limit=MAX_REQUEST_BYTES, backlog=128))
            self.port = int(self._server.sockets[0].getsockname()[1])
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = e
            return
        finally:
            started.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self._max:
            writer.close()
            return
        self._open += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout)
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            if method not in (b"GET", b"HEAD"):
                status, body, kind = b"405 Method Not Allowed", b"only GET\n", "text/plain"
            elif path in (b"/metrics", b"/"):
                body, kind = self._scrape()
                status = b"200 OK"
            else:
                status, body, kind = b"404 Not Found", b"try /metrics\n", "text/plain"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind.encode() + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                         + (body if method != b"HEAD" else b""))
            await asyncio.wait_for(writer.drain(), self._timeout)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ValueError):
            pass  # slow, incomplete, oversized or gone: closed
        finally:
            self._open -= 1
            writer.close()

    def close(self) -> None:
        """Stop listening, close every connection and the loop's thread."""
        async def stop() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()


def _live() -> list[Metrics]:
    """The servers' collectors alive now (none while no server has metrics on)."""
    with _LIVE_LOCK:
        return list(_LIVE)


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
    for m in _live():
        m.set_jobs(counts)


def count_grpc_server_replaced() -> None:
    """For ``serve``: a gRPC server stopped by itself and a new one serves. A no-op without metrics."""
    for m in _live():
        m.grpc_servers_replaced.inc()


def add_job_steps(n: int) -> None:
    """For the training engine: ``n`` more optimizer steps were done. A no-op without metrics."""
    if n <= 0:
        return
    for m in _live():
        m.job_steps.inc(n)
