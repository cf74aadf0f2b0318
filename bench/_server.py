"""The benchmark's server process: lossd as ``lossd serve`` builds it, plus a bare echo.

The echo runs on a bare ``grpc.aio`` server (no interceptors) in the same process, on the
same event loop, with the same server options and the same glibc malloc settings as
``lossd serve`` (unless ``--no-malloc-tuning``), so "EvaluateLoss ÷ echo" measures all
that lossd adds to moving the bytes, its interceptors included. (The echo is also served by
the lossd server itself, through its interceptors, for the ``processes`` section, whose
servers share one port.)

The echo method takes raw bytes whose first 8 (little-endian) say how many
bytes to answer with, and answers with that many bytes of the request (``bench._echo``; the
request itself when the sizes match): the same payload in and out as the
EvaluateLoss call it stands beside.

``--reuseport`` (the ``--processes`` prototype, docs/performance.md) sets
``grpc.so_reuseport`` deliberately, and ``--also-port P`` listens on ``P`` too:
several such processes share one port, the kernel spreading connections among them.

Like ``lossd serve``, the process sets OpenMP's wait policy before torch loads
(``lossd.server._openmp``; an ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` in its environment wins)
and ``sys.setswitchinterval`` (``--switch-interval-s`` to try another); ``--batch-window-us`` is
``lossd serve``'s flag.

Run: ``python -m bench._server [--no-malloc-tuning] [--reuseport [--also-port P]] [--batch-window-us W]``;
it prints its port and the bare echo's.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile

import grpc

from lossd.server._openmp import quiet_openmp

quiet_openmp()  # as lossd serve does, before torch loads

from lossd.server._app import SWITCH_INTERVAL_S, freeze_startup_heap  # noqa: E402 - after quiet_openmp
from lossd.server._limits import DEFAULT_BATCH_WINDOW_US  # noqa: E402

from ._echo import answer  # noqa: E402

__all__ = ["main"]


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return answer(request)


async def _echo_stream(requests, context):  # type: ignore[no-untyped-def]
    async for request in requests:
        yield answer(request)


async def _serve(args: argparse.Namespace) -> None:
    from lossd.server import ServerConfig, create_server
    from lossd.server._connections import connection_options

    with tempfile.TemporaryDirectory(prefix="lossd-bench-") as data_dir:
        config = ServerConfig(host="127.0.0.1", port=0, device="cpu", plugins="none", data_dir=data_dir)
        if args.workers:
            config.workers = args.workers
        config.batch_window_us = args.batch_window_us
        options = [("grpc.so_reuseport", 1)] if args.reuseport else []
        server = await create_server(config, extra_options=options)
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(_echo),
            "EchoStream": grpc.stream_stream_rpc_method_handler(_echo_stream),
        }
        server.grpc_server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("lossd.bench.Echo", handlers),
        ))
        bare = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            *connection_options(config.max_concurrent_rpcs, config.max_concurrent_streams, config.keepalive_time_s,
                                config.keepalive_timeout_s, config.min_ping_interval_s),
        ])
        bare.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("lossd.bench.Echo", handlers),))
        echo_port = bare.add_insecure_port("127.0.0.1:0")
        await bare.start()
        freeze_startup_heap()  # as lossd serve does
        port = server.port
        if args.also_port:
            port = server.grpc_server.add_insecure_port(f"127.0.0.1:{args.also_port}")
            if port != args.also_port:
                raise SystemExit(f"could not share port {args.also_port}")
        await server.start()
        print(port, echo_port, flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await bare.stop(1)
        await server.close(1)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._server")
    parser.add_argument("--no-malloc-tuning", action="store_true")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--reuseport", action="store_true", help="set grpc.so_reuseport (the --processes prototype)")
    parser.add_argument("--also-port", type=int, default=0, help="listen on this port too (with --reuseport)")
    parser.add_argument("--batch-window-us", type=int, default=DEFAULT_BATCH_WINDOW_US)
    parser.add_argument("--switch-interval-s", type=float, default=SWITCH_INTERVAL_S,
                        help="sys.setswitchinterval, as lossd serve sets it")
    args = parser.parse_args()
    sys.setswitchinterval(args.switch_interval_s)
    if not args.no_malloc_tuning:
        from lossd._malloc import tune_malloc

        tune_malloc()
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
