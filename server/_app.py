"""Build and run the lossd gRPC server.

>>> import asyncio, tempfile
>>> async def demo():
...     server, port = await create_server(ServerConfig(port=0, data_dir=tempfile.mkdtemp()))
...     await server.start()
...     await server.stop(None)
...     await server.lossd_jobs.close()
...     return port > 0
>>> asyncio.run(demo())
True
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .. import __version__
from .._malloc import tune_malloc
from .._wire import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_REQUEST_ELEMENTS,
    DEFAULT_MAX_TENSOR_ELEMENTS,
    DEFAULT_MAX_TENSORS,
    DEFAULT_MAX_TERMS,
    TensorLimits,
)
from ..v1 import lossd_pb2, training_pb2
from ._connections import (
    DEFAULT_KEEPALIVE_TIME_S,
    DEFAULT_KEEPALIVE_TIMEOUT_S,
    DEFAULT_MIN_PING_INTERVAL_S,
    connection_options,
)
from ._logging import LOG_FORMATS, configure_logging, emit
from ._security import ConfigError, Security, describe, resolve_security
from .evaluation import resolve_device
from .interceptors import (
    DEFAULT_MAX_CONCURRENT_RPCS,
    DEFAULT_MAX_CONCURRENT_STREAMS,
    ConcurrencyLimiter,
    DrainGate,
    build_interceptors,
    build_observability,
    drain,
)
from .losses import REGISTRY, Registry
from .losses._plugins import load_plugin_setting
from .rpc import LossService, add_loss_service
from .training import TrainingConfig, TrainingLimits, add_training_service
from .training._manager import DEFAULT_LEASE_S
from .training._store import StoreError

__all__ = ["ServerConfig", "create_server", "serve", "main"]

log = logging.getLogger("lossd.server")

LOSS_SERVICE = lossd_pb2.DESCRIPTOR.services_by_name["LossService"].full_name
TRAINING_SERVICE = training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name


def _env(name: str, default: Any, parse: Callable[[str], Any] = str, **kwargs: Any) -> Any:
    """A dataclass field read from the environment variable ``name`` when each config is made:
    ``parse`` of its text when it is set, else ``default``."""
    def read() -> Any:
        text = os.environ.get(name)
        return default if text is None else parse(text)
    return field(default_factory=read, **kwargs)


def parse_duration(text: str, flag: str) -> float:
    """Seconds in ``text``: a number of seconds, or one with a unit s, m, h or d.

    >>> parse_duration("30d", "--job-retention"), parse_duration("90", "--job-retention")
    (2592000.0, 90.0)
    """
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    scale = units.get(value[-1:], 0)
    try:
        seconds = float(value[:-1] if scale else value) * (scale or 1)
    except ValueError:
        raise ConfigError(f"{flag} is {text!r}: give seconds, or a number with s, m, h or d (e.g. 30d)") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"{flag} is {text!r}: must be a finite duration >= 0 (0 keeps ended jobs)")
    return seconds


def _not_zero(text: str) -> bool:
    return text != "0"


def _yes(text: str) -> bool:  # only an explicit yes counts: 1, true, yes, on
    return text.strip().lower() in ("1", "true", "yes", "on")


def _or_none(text: str) -> str | None:
    return text or None


def _int_or_none(text: str) -> int | None:
    return int(text) if text else None


@dataclass
class ServerConfig:
    """Server settings; every field has a ``LOSSD_*`` environment variable."""

    host: str = _env("LOSSD_HOST", "127.0.0.1")
    port: int = _env("LOSSD_PORT", 50051, int)
    device: str = _env("LOSSD_DEVICE", "auto")
    workers: int = _env("LOSSD_WORKERS", min(4, os.cpu_count() or 1), int)
    max_message_bytes: int = _env("LOSSD_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, int)
    max_tensor_elements: int = _env("LOSSD_MAX_TENSOR_ELEMENTS", DEFAULT_MAX_TENSOR_ELEMENTS, int)
    #: Elements in all the tensors of one request; and tensors per request (lossd._wire.check_tensors).
    max_request_elements: int = _env("LOSSD_MAX_REQUEST_ELEMENTS", DEFAULT_MAX_REQUEST_ELEMENTS, int)
    max_tensors: int = _env("LOSSD_MAX_TENSORS", DEFAULT_MAX_TENSORS, int)
    #: Terms of one composite objective (each evaluates a loss over the request's inputs).
    max_terms: int = _env("LOSSD_MAX_TERMS", DEFAULT_MAX_TERMS, int)
    reflection: bool = _env("LOSSD_REFLECTION", True, _not_zero)
    grace_s: float = _env("LOSSD_GRACE_S", 10.0, float)
    #: Loss plugins to load: "all" (default), "none", or comma-separated entry point names.
    plugins: str = _env("LOSSD_PLUGINS", "all")
    #: glibc malloc keeps freed large buffers for reuse (lossd._malloc); applied by main() only.
    malloc_tuning: bool = _env("LOSSD_MALLOC_TUNING", True, _not_zero)
    #: Prometheus metrics on this HTTP port (same host as gRPC); None: off. Needs lossd[metrics].
    metrics_port: int | None = _env("LOSSD_METRICS_PORT", None, _int_or_none)
    #: "plain" (default) or "json": one JSON object per log line, plus an access line per RPC.
    log_format: str = _env("LOSSD_LOG_FORMAT", "plain")
    #: Where training jobs live: SQLite (jobs, events, results) and checkpoints; created if missing.
    data_dir: str = _env("LOSSD_DATA_DIR", ".lossd")
    #: Where training jobs are stored: "" (SQLite in data_dir) or a postgresql:// URL shared by replicas.
    #: It may hold a password: never in repr, logs or errors (masked).
    job_store: str = _env("LOSSD_JOB_STORE", "", repr=False)
    #: Seconds a replica's claim on a running job lasts unless renewed (docs/scaling.md).
    job_lease_s: float = _env("LOSSD_JOB_LEASE_S", DEFAULT_LEASE_S, float)
    #: How long after its end an ended job is kept (then deleted with its events and parameters); 0: forever.
    job_retention: str = _env("LOSSD_JOB_RETENTION", "30d")
    #: Training jobs running at once (each in its own worker process, one thread); more wait in a queue.
    max_jobs: int = _env("LOSSD_MAX_JOBS", max(1, (os.cpu_count() or 2) // 2), int)
    max_queued_jobs: int = _env("LOSSD_MAX_QUEUED_JOBS", 32, int)
    max_epochs: int = _env("LOSSD_MAX_EPOCHS", TrainingLimits.max_epochs, int)
    max_steps: int = _env("LOSSD_MAX_STEPS", TrainingLimits.max_steps, int)
    max_parameters: int = _env("LOSSD_MAX_PARAMETERS", TrainingLimits.max_parameters, int)
    max_samples: int = _env("LOSSD_MAX_SAMPLES", TrainingLimits.max_samples, int)
    #: Data-parallel processes (torch.distributed ranks) one training job may ask for (its world_size).
    max_world_size: int = _env("LOSSD_MAX_WORLD_SIZE", TrainingLimits.max_world_size, int)
    #: HOST:PORT where this server hosts the rendezvous (a c10d TCPStore) of jobs on several machines.
    rdzv_endpoint: str = _env("LOSSD_RDZV_ENDPOINT", "")
    # -- security (server/_security.py; docs/security.md) --
    #: Bearer token every call but health must carry; env only (a flag would show it in `ps`). Never shown.
    token: str | None = _env("LOSSD_TOKEN", None, _or_none, repr=False)
    #: A file holding the bearer token, read once at start.
    token_file: str | None = _env("LOSSD_TOKEN_FILE", None, _or_none)
    #: PEM certificate chain and private key: serve TLS.
    tls_cert: str | None = _env("LOSSD_TLS_CERT", None, _or_none)
    tls_key: str | None = _env("LOSSD_TLS_KEY", None, _or_none)
    #: PEM CA bundle: require client certificates it signed (mutual TLS).
    tls_client_ca: str | None = _env("LOSSD_TLS_CLIENT_CA", None, _or_none)
    #: Serve beyond loopback without authentication (logged as a warning): LOSSD_INSECURE=1 (true, yes, on).
    insecure: bool = _env("LOSSD_INSECURE", False, _yes)
    # -- concurrency and connections (server/_connections.py, server/interceptors/_concurrency.py) --
    max_concurrent_rpcs: int = _env("LOSSD_MAX_CONCURRENT_RPCS", DEFAULT_MAX_CONCURRENT_RPCS, int)
    max_concurrent_streams: int = _env("LOSSD_MAX_CONCURRENT_STREAMS", DEFAULT_MAX_CONCURRENT_STREAMS, int)
    keepalive_time_s: float = _env("LOSSD_KEEPALIVE_TIME_S", DEFAULT_KEEPALIVE_TIME_S, float)
    keepalive_timeout_s: float = _env("LOSSD_KEEPALIVE_TIMEOUT_S", DEFAULT_KEEPALIVE_TIMEOUT_S, float)
    min_ping_interval_s: float = _env("LOSSD_MIN_PING_INTERVAL_S", DEFAULT_MIN_PING_INTERVAL_S, float)

    def tensor_limits(self) -> TensorLimits:
        """The size limits on one request's tensors."""
        return TensorLimits(self.max_tensor_elements, self.max_request_elements, self.max_tensors, self.max_terms)

    def training(self) -> TrainingConfig:
        """The training part of the settings."""
        if not self.job_lease_s > 0:
            raise ConfigError(f"--job-lease-s is {self.job_lease_s}; must be > 0 seconds")
        limits = TrainingLimits(self.max_epochs, self.max_steps, self.max_parameters, self.max_samples,
                                self.max_tensor_elements, self.max_request_elements, self.max_tensors,
                                max_world_size=self.max_world_size)
        return TrainingConfig(Path(self.data_dir), self.max_jobs, self.max_queued_jobs, limits, self.plugins,
                              rdzv_endpoint=self.rdzv_endpoint, job_store=self.job_store, lease_s=self.job_lease_s,
                              retention_s=parse_duration(self.job_retention, "--job-retention"))

    def security(self) -> Security:
        """The security part, checked (the exposure rule); raises :class:`SecurityError`."""
        return resolve_security(self.host, token=self.token, token_file=self.token_file, tls_cert=self.tls_cert,
                                tls_key=self.tls_key, tls_client_ca=self.tls_client_ca, insecure=self.insecure)


async def create_server(
    config: ServerConfig, registry: Registry = REGISTRY
) -> tuple[grpc.aio.Server, int]:
    """A configured, not yet started server and the port it bound (``port=0``: ephemeral)."""
    security = config.security()  # first: a server that may not start should not load anything
    load_plugin_setting(config.plugins, registry)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        *connection_options(config.max_concurrent_rpcs, config.max_concurrent_streams, config.keepalive_time_s,
                            config.keepalive_timeout_s, config.min_ping_interval_s),
    ]
    observability = build_observability(registry, metrics_port=config.metrics_port, log_format=config.log_format)
    limiter = ConcurrencyLimiter(config.max_concurrent_rpcs, config.max_concurrent_streams)
    gate = DrainGate()  # counts calls in flight; refuses new ones once serve() drains (UNAVAILABLE)
    # The order is fixed and explained in one place: lossd.server.interceptors.build_interceptors.
    interceptors = build_interceptors(gate, limiter, token=security.token,
                                      observability=observability.interceptor if observability else None)
    server = grpc.aio.server(options=options, interceptors=interceptors)
    executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="lossd-eval")
    device = resolve_device(config.device)
    service = LossService(registry, executor, device, config.tensor_limits(),
                          max_message_bytes=config.max_message_bytes)
    add_loss_service(service, server)  # EvaluateLoss replies go out as framed bytes

    health_servicer = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", LOSS_SERVICE, TRAINING_SERVICE):
        await _set_health(health_servicer, name, health_pb2.HealthCheckResponse.SERVING)

    names = [LOSS_SERVICE, TRAINING_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    if config.reflection:
        names.append(reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)

    # The first backward pass starts torch's autograd engine (~0.4 s here): pay it now, not on a call.
    await asyncio.get_running_loop().run_in_executor(executor, _warm_up, device)

    address = f"{config.host}:{config.port}"
    if security.credentials is not None:
        port = server.add_secure_port(address, security.credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {config.host}:{config.port}")
    # Training: the job store under data_dir, unfinished jobs resumed, workers outside the serving path.
    jobs = await add_training_service(server, config.training(), registry, executor)
    server.lossd_jobs = jobs  # type: ignore[attr-defined]
    server.lossd_health = health_servicer  # type: ignore[attr-defined]

    def store_health(ok: bool) -> None:  # the job store came or went: TrainingService's health follows it
        if not jobs.closing:
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            asyncio.ensure_future(_set_health(health_servicer, TRAINING_SERVICE, status))

    jobs.on_store_health = store_health
    server.lossd_drain = gate  # type: ignore[attr-defined]
    if observability is not None:
        observability.start(config.host)  # the metrics endpoint, if any
    server.lossd_observability = observability  # type: ignore[attr-defined]
    server.lossd_executor = executor  # type: ignore[attr-defined]
    server.lossd_security = security  # type: ignore[attr-defined]
    server.lossd_limiter = limiter  # type: ignore[attr-defined]
    return server, port


def _warm_up(device: torch.device) -> None:
    x = torch.zeros(2, device=device, requires_grad=True)
    torch.autograd.grad((x * x).sum(), x)


async def _set_health(servicer: object, name: str, status: int) -> None:
    result = servicer.set(name, status)  # type: ignore[attr-defined]
    if asyncio.iscoroutine(result):
        await result


async def serve(config: ServerConfig, registry: Registry = REGISTRY) -> bool:
    """Serve until SIGTERM or SIGINT, then drain (server/interceptors/_drain.py) for at most ``grace_s``
    seconds; True when every call in flight had ended by itself by then."""
    server, port = await create_server(config, registry)
    await server.start()
    device = resolve_device(config.device)
    log.info("lossd %s serving %d losses on %s:%d (device %s)", __version__, len(registry), config.host, port, device)
    log.info("security: %s", describe(server.lossd_security))  # type: ignore[attr-defined]
    emit(f"lossd {__version__} listening on {config.host}:{port}")
    observability = server.lossd_observability  # type: ignore[attr-defined]
    if observability is not None and observability.metrics_port is not None:
        emit(f"lossd metrics on http://{config.host}:{observability.metrics_port}/metrics")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining for up to %.1fs", config.grace_s)

    async def not_serving() -> None:
        for name in ("", LOSS_SERVICE, TRAINING_SERVICE):
            await _set_health(server.lossd_health, name, health_pb2.HealthCheckResponse.NOT_SERVING)  # type: ignore[attr-defined]

    # New calls refused, health NOT_SERVING, running jobs checkpoint (INTERRUPTED; resumed at the
    # next start), calls in flight finish, then the server stops: all within grace_s (interceptors/_drain.py).
    clean = await drain(server, server.lossd_drain, server.lossd_jobs, server.lossd_executor,  # type: ignore[attr-defined]
                        not_serving, config.grace_s)
    if not clean:
        log.warning("calls still running after the %.1fs grace period were cancelled", config.grace_s)
    if observability is not None:
        observability.close()
    emit("lossd stopped")
    return clean


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``lossd serve``; defaults come from ``LOSSD_*`` variables."""
    parser = parser or argparse.ArgumentParser(prog="lossd serve", description="Run the lossd gRPC server.")
    d = ServerConfig()
    parser.add_argument("--host", default=d.host, help="address to bind (env LOSSD_HOST; default %(default)s)")
    parser.add_argument("--port", type=int, default=d.port, help="port; 0 picks a free one (env LOSSD_PORT; default %(default)s)")
    parser.add_argument("--device", default=d.device, help="torch device: auto, cpu, cuda, cuda:1 (env LOSSD_DEVICE)")
    parser.add_argument("--workers", type=int, default=d.workers, help="evaluation threads (env LOSSD_WORKERS)")
    parser.add_argument("--max-message-bytes", type=int, default=d.max_message_bytes,
                        help="gRPC message size limit, both ways (env LOSSD_MAX_MESSAGE_BYTES)")
    parser.add_argument("--max-tensor-elements", type=int, default=d.max_tensor_elements,
                        help="most elements in one tensor (env LOSSD_MAX_TENSOR_ELEMENTS; default %(default)s)")
    parser.add_argument("--max-request-elements", type=int, default=d.max_request_elements,
                        help="most elements in all the tensors of one request (env LOSSD_MAX_REQUEST_ELEMENTS; "
                        "default %(default)s)")
    parser.add_argument("--max-tensors", type=int, default=d.max_tensors,
                        help="most tensors in one request: inputs, parameters, grad_output; a TrainJob's inline "
                        "data and constant loss inputs (env LOSSD_MAX_TENSORS; default %(default)s)")
    parser.add_argument("--max-terms", type=int, default=d.max_terms,
                        help="most terms in one composite objective (env LOSSD_MAX_TERMS; default %(default)s)")
    parser.add_argument("--no-reflection", dest="reflection", action="store_false", default=d.reflection,
                        help="turn off server reflection (env LOSSD_REFLECTION=0)")
    parser.add_argument("--grace", dest="grace_s", type=float, default=d.grace_s,
                        help="seconds to drain in-flight calls on shutdown (env LOSSD_GRACE_S)")
    parser.add_argument("--plugins", default=d.plugins,
                        help="loss plugins (entry point group lossd.losses) to load: all, none, or a "
                        "comma-separated list of names (env LOSSD_PLUGINS; default %(default)s)")
    parser.add_argument("--no-malloc-tuning", dest="malloc_tuning", action="store_false",
                        default=d.malloc_tuning,
                        help="keep glibc's default malloc behaviour, which returns large freed buffers to "
                        "the kernel (env LOSSD_MALLOC_TUNING=0); see docs/performance.md")
    parser.add_argument("--data-dir", default=d.data_dir,
                        help="folder for training jobs: SQLite store and checkpoints (env LOSSD_DATA_DIR; "
                        "default %(default)s)")
    parser.add_argument("--job-store", default=d.job_store, metavar="URL",
                        help="where training jobs are stored: unset, SQLite in --data-dir; postgresql://USER@HOST/DB "
                        "for a database that several replicas share (needs lossd[postgres]; docs/scaling.md). "
                        "Give a password through env LOSSD_JOB_STORE, not this flag (arguments show in `ps`)")
    parser.add_argument("--job-lease-s", type=float, default=d.job_lease_s,
                        help="seconds a replica's claim on a running job lasts without renewal: a dead replica's "
                        "jobs resume elsewhere after about this long (env LOSSD_JOB_LEASE_S; default %(default)s)")
    parser.add_argument("--job-retention", default=d.job_retention, metavar="DURATION",
                        help="delete ended jobs with their events and parameters this long after they ended: "
                        "seconds, or a number with s, m, h or d; 0 keeps them (env LOSSD_JOB_RETENTION; "
                        "default %(default)s)")
    parser.add_argument("--max-jobs", type=int, default=d.max_jobs,
                        help="training jobs running at once (env LOSSD_MAX_JOBS; default %(default)s)")
    parser.add_argument("--max-queued-jobs", type=int, default=d.max_queued_jobs,
                        help="training jobs waiting for a slot (env LOSSD_MAX_QUEUED_JOBS; default %(default)s)")
    parser.add_argument("--max-epochs", type=int, default=d.max_epochs,
                        help="most epochs per job (env LOSSD_MAX_EPOCHS; default %(default)s)")
    parser.add_argument("--max-steps", type=int, default=d.max_steps,
                        help="most optimizer steps per job (env LOSSD_MAX_STEPS; default %(default)s)")
    parser.add_argument("--max-parameters", type=int, default=d.max_parameters,
                        help="largest model, in parameters (env LOSSD_MAX_PARAMETERS; default %(default)s)")
    parser.add_argument("--max-samples", type=int, default=d.max_samples,
                        help="largest training data set, in samples (env LOSSD_MAX_SAMPLES; default %(default)s)")
    parser.add_argument("--max-world-size", type=int, default=d.max_world_size,
                        help="most data-parallel processes (world_size) per training job "
                        "(env LOSSD_MAX_WORLD_SIZE; default %(default)s)")
    parser.add_argument("--rdzv-endpoint", default=d.rdzv_endpoint, metavar="HOST:PORT",
                        help="host the rendezvous (c10d TCPStore) that other machines join for training jobs "
                        "with nodes > 1 (`lossd join`); off by default; unauthenticated: a trusted network "
                        "only (env LOSSD_RDZV_ENDPOINT)")
    parser.add_argument("--metrics-port", type=int, default=d.metrics_port,
                        help="serve Prometheus metrics on this HTTP port; off by default; needs "
                        "lossd[metrics] (env LOSSD_METRICS_PORT)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=d.log_format,
                        help="plain text, or json: one JSON object per line and an access line per RPC "
                        "(env LOSSD_LOG_FORMAT; default %(default)s)")
    parser.add_argument("--log-level", default=os.environ.get("LOSSD_LOG_LEVEL", "INFO"))
    security = parser.add_argument_group(
        "security", "who may call (docs/security.md). A server bound beyond loopback refuses to start without "
        "a bearer token or mutual TLS, unless --insecure. The token itself comes from the environment "
        "(LOSSD_TOKEN) or a file, never from a flag: arguments show in `ps`.")
    security.add_argument("--token-file", default=d.token_file, metavar="FILE",
                          help="file holding the bearer token that every call but health must send as "
                          "`authorization: Bearer <token>`; read at start (env LOSSD_TOKEN_FILE; or the token "
                          "itself in LOSSD_TOKEN)")
    security.add_argument("--tls-cert", default=d.tls_cert, metavar="PEM",
                          help="serve TLS with this certificate chain (env LOSSD_TLS_CERT)")
    security.add_argument("--tls-key", default=d.tls_key, metavar="PEM",
                          help="private key of --tls-cert (env LOSSD_TLS_KEY)")
    security.add_argument("--tls-client-ca", default=d.tls_client_ca, metavar="PEM",
                          help="require client certificates signed by this CA: mutual TLS (env LOSSD_TLS_CLIENT_CA)")
    security.add_argument("--insecure", action="store_true", default=d.insecure,
                          help="serve beyond loopback without authentication; logged as a warning "
                          "(env LOSSD_INSECURE=1)")
    connections = parser.add_argument_group("concurrency and connections", "server-wide limits on calls in "
                                            "flight (health checks exempt) and HTTP/2 keepalive")
    connections.add_argument("--max-concurrent-rpcs", type=int, default=d.max_concurrent_rpcs, metavar="N",
                          help="unary calls in flight at once, server-wide; more are refused with "
                          "RESOURCE_EXHAUSTED; health checks are exempt (env LOSSD_MAX_CONCURRENT_RPCS; "
                          "default %(default)s)")
    connections.add_argument("--max-concurrent-streams", type=int, default=d.max_concurrent_streams, metavar="N",
                          help="streaming calls open at once (EvaluateLossStream, TrainJob, WatchJob), "
                          "server-wide (env LOSSD_MAX_CONCURRENT_STREAMS; default %(default)s)")
    connections.add_argument("--keepalive-time", dest="keepalive_time_s", type=float, default=d.keepalive_time_s,
                          metavar="S", help="ping a connection after this many idle seconds, to find dead "
                          "peers (env LOSSD_KEEPALIVE_TIME_S; default %(default)s)")
    connections.add_argument("--keepalive-timeout", dest="keepalive_timeout_s", type=float,
                          default=d.keepalive_timeout_s, metavar="S",
                          help="drop a connection whose ping is not answered within this many seconds "
                          "(env LOSSD_KEEPALIVE_TIMEOUT_S; default %(default)s)")
    connections.add_argument("--min-ping-interval", dest="min_ping_interval_s", type=float,
                          default=d.min_ping_interval_s, metavar="S",
                          help="accept client keepalive pings this often at most; clients that ping more "
                          "often are disconnected (GOAWAY too_many_pings) (env LOSSD_MIN_PING_INTERVAL_S; "
                          "default %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lossd serve`` and ``python -m lossd.server``."""
    args = build_parser().parse_args(argv)
    if args.malloc_tuning:
        tune_malloc()  # before the server's threads start allocating
    configure_logging(args.log_level, args.log_format)
    # Every field has a flag but the token, which comes from LOSSD_TOKEN only (arguments show in `ps`).
    config = ServerConfig(**{f.name: getattr(args, f.name) for f in fields(ServerConfig) if f.name != "token"})
    try:
        asyncio.run(serve(config))
    except (ConfigError, StoreError) as e:  # SecurityError included; StoreError: the job store (password masked)
        print(f"lossd serve: error: {e}", file=sys.stderr, flush=True)
        return 2
    # The drain closed what the server owns (jobs, store, listener, metrics). Exit now: calls
    # cancelled at the end of the grace period may leave evaluations on threads that nothing can
    # interrupt, and the interpreter's and libtorch's teardown takes seconds on a loaded machine;
    # neither may hold the exit past the grace period (docs/deployment.md).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
