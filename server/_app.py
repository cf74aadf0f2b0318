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

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .. import __version__
from .._malloc import tune_malloc
from .._settings import SettingError
from ..v1 import lossd_pb2, training_pb2
from ._config import ServerConfig, build_parser, config_from_args
from ._connections import connection_options
from ._logging import configure_logging, emit
from ._security import describe
from .evaluation import resolve_device
from .interceptors import ConcurrencyLimiter, DrainGate, build_interceptors, build_observability, drain
from .losses import REGISTRY, Registry
from .losses._plugins import load_plugin_setting
from .rpc import LossService, add_loss_service
from .training import add_training_service

__all__ = ["ServerConfig", "build_parser", "create_server", "serve", "main"]

log = logging.getLogger("lossd.server")

LOSS_SERVICE = lossd_pb2.DESCRIPTOR.services_by_name["LossService"].full_name
TRAINING_SERVICE = training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name


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
    server.lossd_jobs = await add_training_service(server, config.training(), registry, executor)  # type: ignore[attr-defined]
    server.lossd_health = health_servicer  # type: ignore[attr-defined]
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lossd serve`` and ``python -m lossd.server``."""
    try:
        # Every setting has a flag but the token, which comes from LOSSD_TOKEN only (arguments show in `ps`).
        config = config_from_args(build_parser().parse_args(argv))
        if config.malloc_tuning:
            tune_malloc()  # before the server's threads start allocating
        configure_logging(config.log_level, config.log_format)
        asyncio.run(serve(config))
    except SettingError as e:  # a LOSSD_* variable that does not parse; ConfigError, SecurityError
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
