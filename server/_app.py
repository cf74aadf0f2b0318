"""Build and run the lossd gRPC server.

>>> import asyncio
>>> async def demo():
...     server, port = await create_server(ServerConfig(port=0))
...     await server.start()
...     await server.stop(None)
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
from dataclasses import dataclass, field

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .. import __version__
from .._wire import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_TENSOR_ELEMENTS
from ..v1 import lossd_pb2, lossd_pb2_grpc
from ._evaluate import resolve_device
from ._service import LossService
from .losses import REGISTRY, Registry
from .losses._plugins import load_plugins

__all__ = ["ServerConfig", "create_server", "serve", "main"]

log = logging.getLogger("lossd.server")

LOSS_SERVICE = lossd_pb2.DESCRIPTOR.services_by_name["LossService"].full_name


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


async def create_server(
    config: ServerConfig, registry: Registry = REGISTRY
) -> tuple[grpc.aio.Server, int]:
    """A configured, not yet started server and the port it bound (``port=0``: ephemeral)."""
    if config.plugins.strip().lower() != "none":
        names = None if config.plugins.strip().lower() == "all" else [
            n.strip() for n in config.plugins.split(",") if n.strip()]
        load_plugins(registry, names)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]
    server = grpc.aio.server(options=options)
    executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="lossd-eval")
    device = resolve_device(config.device)
    service = LossService(registry, executor, device, config.max_tensor_elements)
    lossd_pb2_grpc.add_LossServiceServicer_to_server(service, server)

    health_servicer = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", LOSS_SERVICE):
        await _set_health(health_servicer, name, health_pb2.HealthCheckResponse.SERVING)

    names = [LOSS_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    if config.reflection:
        names.append(reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)

    # The first backward pass starts torch's autograd engine (~0.4 s here): pay it now, not on a call.
    await asyncio.get_running_loop().run_in_executor(executor, _warm_up, device)

    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise OSError(f"could not bind {config.host}:{config.port}")
    server.lossd_health = health_servicer  # type: ignore[attr-defined]
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
    print(f"lossd {__version__} listening on {config.host}:{port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining for up to %.1fs", config.grace_s)
    for name in ("", LOSS_SERVICE):
        await _set_health(server.lossd_health, name, health_pb2.HealthCheckResponse.NOT_SERVING)  # type: ignore[attr-defined]
    await server.stop(config.grace_s)
    server.lossd_executor.shutdown(wait=False, cancel_futures=True)  # type: ignore[attr-defined]
    print("lossd stopped", flush=True)


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
    parser.add_argument("--log-level", default=os.environ.get("LOSSD_LOG_LEVEL", "INFO"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lossd serve`` and ``python -m lossd.server``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServerConfig(
        host=args.host, port=args.port, device=args.device, workers=args.workers,
        max_message_bytes=args.max_message_bytes, max_tensor_elements=args.max_tensor_elements,
        reflection=args.reflection, grace_s=args.grace_s, plugins=args.plugins,
    )
    asyncio.run(serve(config))
    return 0
