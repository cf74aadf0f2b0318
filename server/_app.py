"""Build and run the lossd gRPC server.

>>> import asyncio, tempfile
>>> async def demo():
...     server = await create_server(ServerConfig(port=0, data_dir=tempfile.mkdtemp()))
...     await server.start()
...     await server.close()
...     return server.port > 0
>>> asyncio.run(demo())
True
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .. import __version__
from .._malloc import tune_malloc
from .._settings import SettingError, env_name, flag_name
from ..v1 import lossd_pb2, training_pb2, training_pb2_grpc
from ._config import ServerConfig, read_command_line
from ._connections import connection_options, raise_open_files
from ._logging import (
    STARTUP_INTERRUPTED,
    configure_logging,
    emit,
    guard_grpc_logger,
    say_line,
)
from ._metrics import count_grpc_server_replaced
from ._openmp import OPENMP_SETTINGS, openmp_policy
from ._security import ConfigError, Security, check_exposure, describe, log_warnings
from .evaluation import resolve_device
from .interceptors import ConcurrencyLimiter, DrainGate, Observability, build_interceptors, build_observability
from .losses import REGISTRY, Registry
from .losses._plugins import ENTRY_POINT_GROUP, load_plugin_setting, missing_plugins, refused_named
from .rpc import LossService, add_loss_service, describe_loss
from .training import JobManager, TrainingService
from .training._store import StoreError

__all__ = ["LossdServer", "ServerConfig", "create_server", "freeze_startup_heap", "main", "run", "serve"]

log = logging.getLogger("lossd.server")

LOSS_SERVICE = lossd_pb2.DESCRIPTOR.services_by_name["LossService"].full_name
TRAINING_SERVICE = training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
#: How long a Python thread may hold the GIL while another waits for it (Python's default: 5 ms).
SWITCH_INTERVAL_S = 0.0005


@dataclass
class LossdServer:
    """A built lossd server and what it owns: :func:`create_server` makes it, :meth:`start` serves,
    :meth:`drain` shuts it down gracefully (SIGTERM), :meth:`close` at once (tests, bench).

    Its parts are plain attributes, for ``serve`` and for tests that look inside: ``jobs`` (the
    training job manager), ``gate`` (the drain gate), ``limiter`` (concurrency limits), ``health``.
    """

    #: The grpc.aio server (interceptors, services, bound port); not started by create_server.
    grpc_server: grpc.aio.Server
    #: The port bound (the config's, or the ephemeral one ``port=0`` picked).
    port: int
    config: ServerConfig
    device: torch.device
    security: Security
    #: The evaluation thread pool (``--workers``); training's validation runs on it too.
    executor: ThreadPoolExecutor
    health: health.aio.HealthServicer
    gate: DrainGate
    limiter: ConcurrencyLimiter
    jobs: JobManager
    observability: Observability | None = None
    #: The LossService servicer (its dynamic batcher, the progress of its latest batch).
    loss_service: LossService | None = None
    #: A new grpc.aio server with every service of this one, bound to its port (see :meth:`replace_grpc_server`).
    new_grpc_server: Callable[[], grpc.aio.Server] | None = None

    async def start(self) -> None:
        """Start serving (the listener was bound by :func:`create_server`)."""
        await self.grpc_server.start()

    async def replace_grpc_server(self) -> None:
        """Serve again from a new gRPC server, on the same port, with the same services, interceptors and
        training jobs, after the one serving stopped by itself (grpcio's serving loop ends on some malformed
        requests: :func:`serve`)."""
        assert self.new_grpc_server is not None
        server = self.new_grpc_server()
        await server.start()
        self.grpc_server = server

    async def drain(self, grace_s: float) -> bool:
        """Shut down gracefully within ``grace_s`` seconds; True when every call in flight had ended
        by itself (none was cancelled by the deadline).

        In order: new calls refused ``UNAVAILABLE`` (the drain gate), no queued job starts, open
        EvaluateLossStreams read no more items (each ends ``UNAVAILABLE`` once those it read are answered),
        health ``NOT_SERVING`` (``HealthServicer.enter_graceful_shutdown``); running training jobs checkpoint
        and stop, INTERRUPTED (resumed at the next start; one still planning is given back QUEUED), which ends
        their TrainJob/WatchJob streams; calls
        in flight finish; the server stops (what still runs at the deadline is cancelled); the
        evaluation threads take no more work; the metrics endpoint closes.
        """
        deadline = time.monotonic() + max(0.0, grace_s)

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        self.gate.close()
        self.jobs.stop_starting()
        if self.loss_service is not None:  # open EvaluateLossStreams end once their items are answered
            self.loss_service.end_streams()
        await self.health.enter_graceful_shutdown()
        await self.jobs.close(left())
        idle = await self.gate.wait_idle(left())
        await self.grpc_server.stop(min(left(), STRAGGLER_S) if idle else left())
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.observability is not None:
            self.observability.close()
        return idle

    async def close(self, grace_s: float | None = None) -> None:
        """Stop at once: running jobs checkpoint and stop, then the server stops (calls still running
        after ``grace_s`` are cancelled; ``None``: at once), the threads take no more work."""
        await self.jobs.close()
        await self.grpc_server.stop(grace_s)
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.observability is not None:
            self.observability.close()


#: Once no counted call runs, what is left (health watchers, a call that has not started its
#: handler yet) gets at most this long before the server cancels it.
STRAGGLER_S = 1.0


async def create_server(config: ServerConfig, registry: Registry = REGISTRY,
                        extra_options: Sequence[tuple[str, Any]] = (), *,
                        security: Security | None = None) -> LossdServer:
    """A configured server, bound (``port=0``: ephemeral) but not yet started. ``extra_options``: more
    gRPC server arguments, placed before lossd's own because gRPC takes the first occurrence of an
    argument (measured: ``so_reuseport`` 0 then 1 is 0), so these win: the bench's ``processes``
    prototype sets ``grpc.so_reuseport`` there, deliberately (docs/performance.md). ``security``: the
    config's, already read (:meth:`ServerConfig.check_security`; the entry points check it before torch
    loads), so that its token file is read once; the exposure rule is applied to it again here for the config's
    host; None reads and checks it here."""
    # First: a server that may not start should not load anything. Its warnings are logged here, once.
    if security is None:
        security = config.security()
    else:
        check_exposure(config.host, security, config.insecure)
        log_warnings(config.host, security)
    # A busy address, or a host it cannot bind (port 0 too: any port of a host it can bind will do): one line
    # and exit 2, before anything loads (gRPC would log its own errors)
    reason = _why_not_bindable(config.host, config.port, probe=True)
    if reason:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {reason}")
    missing = missing_plugins(config.plugins)
    if missing:  # named by the operator: a typo must not start a server without its losses
        raise ConfigError(f"{flag_name('plugins')} {config.plugins!r} (env {env_name('plugins')}): "
                          f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed "
                          f"(no entry point of group {ENTRY_POINT_GROUP}); use all, none or installed names")
    # Each plugin loss must publish (ListLosses); a plugin named in --plugins that is refused stops the start.
    refused = refused_named(config.plugins, load_plugin_setting(config.plugins, registry, vet=describe_loss))
    if refused:
        raise ConfigError(f"{flag_name('plugins')} {config.plugins!r} (env {env_name('plugins')}): "
                          + "; ".join(f"plugin {r.name!r} ({r.value}) {r.error}" for r in refused)
                          + " (see the log); fix it, or leave it out")
    options = [
        *extra_options,  # first: gRPC takes an argument's first occurrence
        # gRPC sets SO_REUSEPORT by default: a second server on the same address would share the port
        # silently, clients alternating between two servers with different jobs. Refused instead
        # (unless extra_options set it first, deliberately: the bench's processes prototype).
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        *connection_options(config.max_concurrent_rpcs, config.max_concurrent_streams, config.keepalive_time_s,
                            config.keepalive_timeout_s, config.min_ping_interval_s),
    ]
    guard_grpc_logger()  # gRPC logs a non-UTF-8 metadata value (a token) whole, on every call
    observability = build_observability(registry, metrics_port=config.metrics_port, log_format=config.log_format)
    limiter = ConcurrencyLimiter(config.max_concurrent_rpcs, config.max_concurrent_streams)
    gate = DrainGate()  # counts calls in flight; refuses new ones once the server drains (UNAVAILABLE)
    # The order is fixed and explained in one place: lossd.server.interceptors.build_interceptors.
    interceptors = build_interceptors(gate, limiter, token=security.token,
                                      observability=observability.interceptor if observability else None)

    def new_server() -> grpc.aio.Server:
        return grpc.aio.server(options=options, interceptors=interceptors)

    server = new_server()
    executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="lossd-eval")
    taken = _Taken(server, executor, observability)
    try:
        return await _assemble(config, registry, security, observability, gate, limiter, taken, new_server)
    except BaseException:  # a start refused (a port, the metrics port, a data directory in use...) or interrupted
        await taken.give_back()
        raise


@dataclass
class _Taken:
    """What :func:`create_server` has taken so far, given back when the start is refused after all."""

    server: grpc.aio.Server
    executor: ThreadPoolExecutor
    observability: Observability | None
    bound: bool = False  # the gRPC port
    jobs: JobManager | None = None

    async def give_back(self) -> None:
        """The job manager, the bound port, the evaluation threads, the metrics endpoint: each whatever
        became of the others."""
        if self.jobs is not None:
            try:
                await self.jobs.close()
            except Exception:  # the refusal is what the caller hears; this is for the log
                log.exception("closing the job manager of a refused start failed")
        try:
            if self.bound:  # gRPC closes a bound listener only when a started server stops (stop() alone keeps it)
                await self.server.start()
            await self.server.stop(None)
        except Exception:
            log.exception("stopping the gRPC server of a refused start failed")
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.observability is not None:
            self.observability.close()  # the metrics endpoint: its port and thread


async def _assemble(config: ServerConfig, registry: Registry, security: Security, observability: Observability | None,
                    gate: DrainGate, limiter: ConcurrencyLimiter, taken: _Taken,
                    new_server: Callable[[], grpc.aio.Server]) -> LossdServer:
    """The rest of :func:`create_server`, on the server and the thread pool it made (``taken``);
    ``new_server()`` makes another such server (options and interceptors), for a replacement."""
    server, executor = taken.server, taken.executor
    device = _device(config.device)
    service = LossService(registry, executor, device, config.tensor_limits(),
                          max_message_bytes=config.max_message_bytes, batch_limits=config.batch_limits(),
                          batch_window_us=config.batch_window_us, stream_threads=config.workers,
                          stream_window_bytes=config.max_message_bytes)
    if observability is not None and observability.metrics is not None and service.batcher is not None:
        observability.metrics.watch_batcher(service.batcher)

    health_servicer = HealthServicer()
    for name in ("", LOSS_SERVICE, TRAINING_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    # The first backward pass starts torch's autograd engine (~0.4 s here): pay it now, not on a call.
    await asyncio.get_running_loop().run_in_executor(executor, _warm_up, device)

    port = _bind(server, config.host, config.port, security)
    taken.bound = True
    if observability is not None:  # the metrics endpoint, if any: before training, which resumes jobs
        try:
            observability.start(config.host)
        except OSError as e:  # its port in use: one line and exit 2, as a busy gRPC port
            raise ConfigError(str(e)) from None
    # Training: the job store under data_dir, unfinished jobs resumed, workers outside the serving path.
    jobs = JobManager(config.training(), registry, executor)
    taken.jobs = jobs
    await jobs.start()
    training = TrainingService(jobs)

    def add_services(to: grpc.aio.Server) -> None:  # every service, the same servicers, on a first or a new server
        add_loss_service(service, to)  # EvaluateLoss replies go out as framed bytes
        training_pb2_grpc.add_TrainingServiceServicer_to_server(training, to)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, to)
        if config.reflection:
            reflection.enable_server_reflection([LOSS_SERVICE, TRAINING_SERVICE, HEALTH_SERVICE,
                                                 reflection.SERVICE_NAME], to)

    def replacement() -> grpc.aio.Server:
        again = new_server()
        add_services(again)
        _bind(again, config.host, port, security)
        return again

    add_services(server)
    loop = asyncio.get_running_loop()
    trouble: set[str] = set()  # why TrainingService is NOT_SERVING: "store" unreachable, "disk" full

    async def show_training_health() -> None:  # on the loop: the status of the latest `trouble`
        ok = not trouble
        await health_servicer.set(TRAINING_SERVICE, health_pb2.HealthCheckResponse.SERVING if ok
                                  else health_pb2.HealthCheckResponse.NOT_SERVING)

    def training_health(reason: str, ok: bool) -> None:  # from any thread: LossService is unaffected
        (trouble.discard if ok else trouble.add)(reason)
        if not jobs.closing:
            asyncio.run_coroutine_threadsafe(show_training_health(), loop)

    jobs.on_store_health = lambda ok: training_health("store", ok)  # the job store came or went
    jobs.on_storage = lambda writable: training_health("disk", writable)  # a full data directory
    return LossdServer(server, port, config, device, security, executor, health_servicer, gate, limiter, jobs,
                       observability, service, replacement)


def _bind(server: grpc.aio.Server, host: str, port: int, security: Security) -> int:
    """Bind ``server`` to ``host:port`` (TLS when ``security`` has credentials); the port bound, or a
    :class:`ConfigError` saying why not."""
    address = f"{host}:{port}"
    try:
        if security.credentials is not None:
            bound = server.add_secure_port(address, security.credentials)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:  # grpc: "Failed to bind to address ..."
        bound = 0
    if bound == 0:
        raise ConfigError(f"cannot listen on {address}: {_why_not_bindable(host, port)}")
    return int(bound)


def _device(name: str) -> torch.device:
    """The ``--device`` to compute on, refused (``SettingError``) when torch cannot use it here."""
    try:
        device = resolve_device(name)
        if device.type == "cuda" and torch.cuda.is_available() and (device.index or 0) >= torch.cuda.device_count():
            raise RuntimeError(f"this machine has {torch.cuda.device_count()} CUDA device(s)")
        torch.empty(0, device=device)
    # torch refuses by RuntimeError, NotImplementedError (a backend without the op), or an
    # AssertionError ("Torch not compiled with CUDA enabled")
    except (RuntimeError, NotImplementedError, AssertionError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0]  # torch's first sentence
        raise SettingError(f"--device {name} (env LOSSD_DEVICE): torch cannot use it here ({why}); "
                           "use auto or cpu") from None
    return device


def _why_not_bindable(host: str, port: int, probe: bool = False) -> str:
    """Why ``host:port`` cannot be listened on (``""`` when it can, with ``probe``): a plain socket
    bound the way gRPC binds (``SO_REUSEADDR``, no ``SO_REUSEPORT``), then closed.

    >>> import socket
    >>> with socket.create_server(("127.0.0.1", 0)) as busy:
    ...     _why_not_bindable("127.0.0.1", busy.getsockname()[1], probe=True).split("; ")
    ['the address is already in use (another lossd server, or another program, listens there)',
     'choose another --port (LOSSD_PORT) or stop that process']
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # gRPC's "[::1]" is "::1"
    try:
        infos = socket.getaddrinfo(name or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        return f"cannot resolve the host {host!r} ({e.strerror or e})"
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(sockaddr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return ("the address is already in use (another lossd server, or another program, listens "
                        "there); choose another --port (LOSSD_PORT) or stop that process")
            return f"{e.strerror or e} (choose another --host/--port)"
    return "" if probe else "gRPC could not bind it (see the log above)"


class HealthServicer(health.aio.HealthServicer):
    """grpc.health.v1.Health, ``List`` included: grpcio's servicer leaves it unimplemented, so each call (open to
    callers without a token, as all of health is) logged an ERROR traceback and answered with the exception's
    class (an audit, 2026-12-06: 2.9 MB of log in 3 s from one client).

    >>> reply = asyncio.run(HealthServicer().List(health_pb2.HealthListRequest(), None))  # type: ignore[attr-defined]
    >>> reply.statuses[""].status == health_pb2.HealthCheckResponse.SERVING
    True
    """

    async def List(self, request: Any, context: Any) -> Any:  # the typing stubs predate List
        """Every service's status, as ``Check`` answers it."""
        statuses = self._server_status  # type: ignore[attr-defined]  # the servicer's own table
        return health_pb2.HealthListResponse(statuses={  # type: ignore[attr-defined]
            name: health_pb2.HealthCheckResponse(status=status) for name, status in statuses.items()})


def _warm_up(device: torch.device) -> None:
    x = torch.zeros(2, device=device, requires_grad=True)
    torch.autograd.grad((x * x).sum(), x)


def freeze_startup_heap() -> None:
    """Collect the garbage once, then leave every object alive (torch's, the registry's, gRPC's: about
    300,000) out of later collections (``gc.freeze``). A full collection walks every tracked object,
    holding the event loop for it: about 150 ms of a 2-CPU machine with them, microseconds without.
    Called once the server is built, before it serves (``lossd serve``; the benchmark's server).

    >>> freeze_startup_heap(); gc.get_freeze_count() > 100_000  # doctest: +SKIP
    True
    """
    gc.collect()
    gc.freeze()


class GrpcServerLost(RuntimeError):
    """gRPC's server stopped by itself while lossd served (``lossd serve`` exits 1)."""


async def serve(config: ServerConfig, registry: Registry = REGISTRY, *, security: Security | None = None) -> bool:
    """Serve until SIGTERM or SIGINT, then drain (:meth:`LossdServer.drain`) for at most ``grace_s``
    seconds; True when every call in flight had ended by itself by then. Should gRPC's server stop by itself,
    serve again from a new one (:func:`_serve_until_stopped`); when that fails, drain the same way, then raise
    :class:`GrpcServerLost`. ``security``: as for :func:`create_server`."""
    server = await create_server(config, registry, security=security)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:  # a Ctrl-C before the signal handlers are in place cancels this task: what was built is closed
        # The handlers first: a signal from here on (say, right after "listening on", which tools read as
        # ready) drains the server, once it has started, instead of killing it
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        freeze_startup_heap()
        await server.start()
        log.info("lossd %s serving %d losses on %s:%d (device %s)", __version__, len(registry), config.host,
                 server.port, server.device)
        log.info("security: %s", describe(server.security))
        _log_openmp_policy()
        emit(f"lossd {__version__} listening on {config.host}:{server.port}")
        if server.observability is not None and server.observability.metrics_port is not None:
            emit(f"lossd metrics on http://{config.host}:{server.observability.metrics_port}/metrics")
    except BaseException:
        await server.close()
        raise
    lost = await _serve_until_stopped(server, stop)
    log.info("shutting down: draining for up to %.1fs", config.grace_s)
    clean = await server.drain(config.grace_s)
    if not clean:
        log.warning("calls still running after the %.1fs grace period were cancelled", config.grace_s)
    await _settle(STRAGGLER_S)
    if lost:
        emit("lossd stopped: the gRPC server had stopped by itself")
        raise GrpcServerLost(f"the gRPC server stopped by itself {lost} (see the log); restart lossd")
    emit("lossd stopped")
    return clean


#: A gRPC server that stops by itself within this many seconds of the previous stop makes lossd wait before the
#: next one serves: REPLACE_DELAY_S, doubled for each such stop, at most MAX_REPLACE_DELAY_S. A sender of
#: stopping requests then closes the port for at most a second each, instead of making lossd give up (a
#: count of stops made it exit 1 after 11 requests sent in 0.2 s: an audit, 2026-12-06).
REPLACED_WINDOW_S, REPLACE_DELAY_S, MAX_REPLACE_DELAY_S = 60.0, 0.05, 1.0
#: Seconds between two looks at whether gRPC's server still serves.
SERVING_POLL_S = 0.25


async def _serve_until_stopped(server: LossdServer, stop: asyncio.Event) -> str:
    """Wait for ``stop``; "" then. gRPC's server can stop by itself: grpcio's serving loop ends on a request
    it cannot take (a method name that is not UTF-8, sent by anyone who reaches the port, before any
    interceptor or token check), closing the listener while the process goes on. lossd then serves again
    from a new gRPC server on the same port, with the same services, interceptors and running jobs
    (:meth:`LossdServer.replace_grpc_server`), after a delay that grows while the stops come close together
    (:data:`REPLACE_DELAY_S`), and ends the calls still open on the old one. When no new server can be made,
    it returns why, and ``serve`` drains and exits 1 for a supervisor to restart the process."""
    stops: list[float] = []
    while True:
        old = server.grpc_server
        why = await _stopped_by_itself(old, stop)
        if why is None:
            return ""
        now = time.monotonic()
        stops = [t for t in stops if now - t < REPLACED_WINDOW_S] + [now]
        delay = 0.0 if len(stops) == 1 else min(MAX_REPLACE_DELAY_S, REPLACE_DELAY_S * 2 ** (len(stops) - 2))
        if delay:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return ""
        try:
            await server.replace_grpc_server()
        except Exception as e:
            log.critical("the gRPC server stopped by itself (%s) and could not be replaced (%s)", why, _reason(e))
            return "and could not be replaced"
        count_grpc_server_replaced()
        log.critical("the gRPC server stopped by itself (%s, %d times in %.0f s); serving again from a new one on "
                     "port %d", why, len(stops), REPLACED_WINDOW_S, server.port)
        # Its calls still open (a health Watch, a stream) would hold it up to their end: they end now, and the
        # clients' calls fail UNAVAILABLE or CANCELLED.
        asyncio.ensure_future(old.stop(0)).add_done_callback(lambda f: f.cancelled() or f.exception())


async def _stopped_by_itself(grpc_server: grpc.aio.Server, stop: asyncio.Event) -> str | None:
    """``None`` once ``stop`` is set; why, once ``grpc_server`` stopped serving by itself. Its serving loop's
    end shows at once in its core's ``is_running()`` (grpcio's, not public: tests/robustness/test_drain.py
    pins it), while ``wait_for_termination()`` waits for every call still open on it (a health Watch with
    no token held it, and the port closed, as long as it lasted)."""
    core = getattr(grpc_server, "_server", None)
    running = getattr(core, "is_running", None)
    signalled = asyncio.ensure_future(stop.wait())
    ended = asyncio.ensure_future(grpc_server.wait_for_termination())
    # (not cancelled: cancelling a wait for termination cancels gRPC's own shutdown)
    ended.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        while not signalled.done():
            await asyncio.wait({signalled, ended}, timeout=SERVING_POLL_S, return_when=asyncio.FIRST_COMPLETED)
            if signalled.done():
                break
            if ended.done():
                return _reason(None if ended.cancelled() else ended.exception())
            if running is not None and not running():
                return "its serving loop ended: see the error gRPC logged above"
        return None
    finally:
        signalled.cancel()


def _reason(error: BaseException | None) -> str:
    return f"{type(error).__name__}: {error}" if error is not None else "no reason given"


async def _settle(timeout: float) -> None:
    """Let the tasks still running (the handlers of calls the server has just cancelled, ending) finish, for
    at most ``timeout`` seconds: ``asyncio.run`` would cancel them as it returns, and gRPC prints a traceback
    for each handler cancelled that way."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=timeout)


def _log_openmp_policy() -> None:
    """Say which OpenMP wait policy the process runs with (lossd.server._openmp): a warning when it has
    none, which happens when torch was imported before the entry point could set one."""
    policy = openmp_policy()
    if policy is None:
        wanted = " ".join(f"{k}={v}" for k, v in OPENMP_SETTINGS.items())
        log.warning("OpenMP's workers spin after each parallel region, taking a CPU from gRPC: torch was imported "
                    "before the server could set %s; set it in the environment (docs/performance.md)", wanted)
    else:
        log.info("OpenMP wait policy: %s", policy)


def main(argv: Sequence[str] | None = None) -> int:
    """``lossd serve`` in this process: its arguments read (:func:`~._config.read_command_line`), then
    :func:`run`. (The entry points, ``lossd serve`` and ``python -m lossd.server``, read them before they
    import this module and torch, then call :func:`run`.)"""
    read = read_command_line(argv)
    return 2 if read is None else run(*read)


def run(config: ServerConfig, security: Security | None = None) -> int:
    """Serve ``config`` until SIGTERM or SIGINT (:func:`serve`), then exit the process: 0, or 1 when gRPC's
    server was lost; a start refused returns 2 (one line on stderr), and a Ctrl-C before the signal handlers
    are in place exits 130 (one line). ``security``: as for :func:`create_server` (the entry points pass what
    :func:`~._config.read_command_line` checked)."""
    log_format = config.log_format  # of the one line of a refusal
    try:
        if config.malloc_tuning:
            tune_malloc()  # before the server's threads start allocating
        # A thread parsing a large request (server/interceptors/_large_requests.py) holds the GIL for up to
        # this long before the event loop gets it back: 5 ms by default, which a health check pays per step.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        raise_open_files()  # a connection is a file: up to the hard limit, not the soft 1024
        configure_logging(config.log_level, config.log_format)
        asyncio.run(serve(config, security=security))
    except (SettingError, StoreError) as e:  # ConfigError, SecurityError, a device torch cannot use, a busy
        # address, a data directory in use; StoreError: the job store is unreachable, or newer than this lossd
        # (its URL's password masked)
        say_line(f"lossd serve: error: {e}", log_format, logging.ERROR)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before serve() installed its signal handlers: what it built is closed
        say_line(STARTUP_INTERRUPTED, log_format, logging.WARNING)
        code = 130
    except GrpcServerLost as e:  # drained (jobs checkpointed, INTERRUPTED); a supervisor restarts the process
        say_line(f"lossd serve: error: {e}", log_format, logging.ERROR)
        code = 1
    else:
        code = 0
    # The drain closed what the server owns (jobs, store, listener, metrics). Exit now: calls
    # cancelled at the end of the grace period may leave evaluations on threads that nothing can
    # interrupt, and the interpreter's and libtorch's teardown takes seconds on a loaded machine;
    # neither may hold the exit past the grace period (docs/deployment.md).
    _remove_multiprocessing_dir()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _remove_multiprocessing_dir() -> None:
    """Remove multiprocessing's temporary directory (``pymp-*`` under ``TMPDIR``: the forkserver's socket),
    which its exit handler would remove and ``os._exit`` skips: every server that had run a job left one."""
    tempdir = getattr(multiprocessing.current_process(), "_config", {}).get("tempdir")
    if tempdir:
        shutil.rmtree(tempdir, ignore_errors=True)

