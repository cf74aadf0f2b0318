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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .. import __version__
from .._malloc import tune_malloc
from .._wire import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_TENSOR_ELEMENTS
from ..v1 import lossd_pb2, training_pb2
from ._evaluate import resolve_device
from ._logging import LOG_FORMATS, configure_logging, emit
from ._observability import build_observability
from ._service import LossService, add_loss_service
from .losses import REGISTRY, Registry
from .losses._plugins import load_plugin_setting
from .training import TrainingConfig, TrainingLimits, add_training_service

__all__ = ["ServerConfig", "create_server", "serve", "main"]

log = logging.getLogger("lossd.server")

LOSS_SERVICE = lossd_pb2.DESCRIPTOR.services_by_name["LossService"].full_name
TRAINING_SERVICE = training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass
class ServerConfig:
    """Server settings; every field has a ``LOSSD_*`` environment variable."""

    host: str = field(default_factory=lambda: os.environ.get("LOSSD_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: _env_int("LOSSD_PORT", 50051))
    device: str = field(default_factory=lambda: os.environ.get("LOSSD_DEVICE", "auto"))
    workers: int = field(default_factory=lambda: _env_int("LOSSD_WORKERS", min(4, os.cpu_count() or 1)))
    max_message_bytes: int = field(
        default_factory=lambda: _env_int("LOSSD_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES)
    )
    max_tensor_elements: int = field(
        default_factory=lambda: _env_int("LOSSD_MAX_TENSOR_ELEMENTS", DEFAULT_MAX_TENSOR_ELEMENTS)
    )
    reflection: bool = field(default_factory=lambda: os.environ.get("LOSSD_REFLECTION", "1") != "0")
    grace_s: float = field(default_factory=lambda: float(os.environ.get("LOSSD_GRACE_S", "10")))
    #: Loss plugins to load: "all" (default), "none", or comma-separated entry point names.
    plugins: str = field(default_factory=lambda: os.environ.get("LOSSD_PLUGINS", "all"))
    #: glibc malloc keeps freed large buffers for reuse (lossd._malloc); applied by main() only.
    malloc_tuning: bool = field(default_factory=lambda: os.environ.get("LOSSD_MALLOC_TUNING", "1") != "0")
    #: Prometheus metrics on this HTTP port (same host as gRPC); None: off. Needs lossd[metrics].
    metrics_port: int | None = field(
        default_factory=lambda: int(os.environ["LOSSD_METRICS_PORT"]) if os.environ.get("LOSSD_METRICS_PORT") else None)
    #: "plain" (default) or "json": one JSON object per log line, plus an access line per RPC.
    log_format: str = field(default_factory=lambda: os.environ.get("LOSSD_LOG_FORMAT", "plain"))
    #: Where training jobs live: SQLite (jobs, events, results) and checkpoints; created if missing.
    data_dir: str = field(default_factory=lambda: os.environ.get("LOSSD_DATA_DIR", ".lossd"))
    #: Training jobs running at once (each in its own worker process, one thread); more wait in a queue.
    max_jobs: int = field(default_factory=lambda: _env_int("LOSSD_MAX_JOBS", max(1, (os.cpu_count() or 2) // 2)))
    max_queued_jobs: int = field(default_factory=lambda: _env_int("LOSSD_MAX_QUEUED_JOBS", 32))
    max_epochs: int = field(default_factory=lambda: _env_int("LOSSD_MAX_EPOCHS", TrainingLimits.max_epochs))
    max_steps: int = field(default_factory=lambda: _env_int("LOSSD_MAX_STEPS", TrainingLimits.max_steps))
    max_parameters: int = field(
        default_factory=lambda: _env_int("LOSSD_MAX_PARAMETERS", TrainingLimits.max_parameters))
    max_samples: int = field(default_factory=lambda: _env_int("LOSSD_MAX_SAMPLES", TrainingLimits.max_samples))

    def training(self) -> TrainingConfig:
        """The training part of the settings."""
        limits = TrainingLimits(self.max_epochs, self.max_steps, self.max_parameters, self.max_samples,
                                self.max_tensor_elements)
        return TrainingConfig(Path(self.data_dir), self.max_jobs, self.max_queued_jobs, limits, self.plugins)


async def create_server(
    config: ServerConfig, registry: Registry = REGISTRY
) -> tuple[grpc.aio.Server, int]:
    """A configured, not yet started server and the port it bound (``port=0``: ephemeral)."""
    load_plugin_setting(config.plugins, registry)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]
    observability = build_observability(registry, metrics_port=config.metrics_port, log_format=config.log_format)
    server = grpc.aio.server(options=options, interceptors=[observability.interceptor] if observability else None)
    executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="lossd-eval")
    device = resolve_device(config.device)
    service = LossService(registry, executor, device, config.max_tensor_elements,
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

    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise OSError(f"could not bind {config.host}:{config.port}")
    # Training: the job store under data_dir, unfinished jobs resumed, workers outside the serving path.
    server.lossd_jobs = await add_training_service(server, config.training(), registry, executor)  # type: ignore[attr-defined]
    server.lossd_health = health_servicer  # type: ignore[attr-defined]
    if observability is not None:
        observability.start(config.host)  # the metrics endpoint, if any
    server.lossd_observability = observability  # type: ignore[attr-defined]
    server.lossd_executor = executor  # type: ignore[attr-defined]
    return server, port


def _warm_up(device: torch.device) -> None:
    x = torch.zeros(2, device=device, requires_grad=True)
    torch.autograd.grad((x * x).sum(), x)


async def _set_health(servicer: object, name: str, status: int) -> None:
    result = servicer.set(name, status)  # type: ignore[attr-defined]
    if asyncio.iscoroutine(result):
        await result


async def serve(config: ServerConfig, registry: Registry = REGISTRY) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls for ``grace_s``."""
    server, port = await create_server(config, registry)
    await server.start()
    device = resolve_device(config.device)
    log.info("lossd %s serving %d losses on %s:%d (device %s)", __version__, len(registry), config.host, port, device)
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
    for name in ("", LOSS_SERVICE, TRAINING_SERVICE):
        await _set_health(server.lossd_health, name, health_pb2.HealthCheckResponse.NOT_SERVING)  # type: ignore[attr-defined]
    # Running jobs checkpoint and stop (INTERRUPTED; resumed at the next start), ending their streams.
    await server.lossd_jobs.close(config.grace_s)  # type: ignore[attr-defined]
    await server.stop(config.grace_s)
    server.lossd_executor.shutdown(wait=False, cancel_futures=True)  # type: ignore[attr-defined]
    if observability is not None:
        observability.close()
    emit("lossd stopped")


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
                        help="largest tensor accepted (env LOSSD_MAX_TENSOR_ELEMENTS)")
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
    parser.add_argument("--metrics-port", type=int, default=d.metrics_port,
                        help="serve Prometheus metrics on this HTTP port; off by default; needs "
                        "lossd[metrics] (env LOSSD_METRICS_PORT)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=d.log_format,
                        help="plain text, or json: one JSON object per line and an access line per RPC "
                        "(env LOSSD_LOG_FORMAT; default %(default)s)")
    parser.add_argument("--log-level", default=os.environ.get("LOSSD_LOG_LEVEL", "INFO"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lossd serve`` and ``python -m lossd.server``."""
    args = build_parser().parse_args(argv)
    if args.malloc_tuning:
        tune_malloc()  # before the server's threads start allocating
    configure_logging(args.log_level, args.log_format)
    config = ServerConfig(**{f.name: getattr(args, f.name) for f in fields(ServerConfig)})
    asyncio.run(serve(config))
    return 0
