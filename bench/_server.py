"""The benchmark's server process: lossd as ``lossd serve`` builds it, plus a bare echo.

Both services share one ``grpc.aio`` server, one process, one set of channel
options and the same glibc malloc settings as ``lossd serve`` (unless
``--no-malloc-tuning``), so "EvaluateLoss ÷ echo" measures what lossd adds
to moving the bytes, nothing else.

The echo method takes raw bytes whose first 8 (little-endian) say how many
bytes to answer with, and answers with that many bytes of the request (the
request itself when the sizes match): the same payload in and out as the
EvaluateLoss call it stands beside.

It also serves a *prototype* the contract does not have: ``Batch/Evaluate``
takes many evaluations in one message (the wire format of a message with
``repeated EvaluateLossRequest requests = 1``) and answers with one
``EvaluateLossStreamResponse`` per item (``repeated ... = 1``). It exists to
measure what several evaluations per message would buy (docs/performance.md).

Run: ``python -m bench._server [--no-malloc-tuning]``; it prints its port.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile

import grpc

__all__ = ["BATCH", "ECHO", "ECHO_STREAM", "echo_payload", "main"]

ECHO = "/lossd.bench.Echo/Echo"
ECHO_STREAM = "/lossd.bench.Echo/EchoStream"
BATCH = "/lossd.bench.Batch/Evaluate"


def echo_payload(request_size: int, reply_size: int) -> bytes:
    """An echo request of ``request_size`` bytes asking for ``reply_size`` bytes back."""
    return reply_size.to_bytes(8, "little") + bytes(max(0, request_size - 8))


def _answer(request: bytes) -> bytes:
    n = int.from_bytes(request[:8], "little")
    if n == len(request):
        return request
    return request[:n] if n < len(request) else request + bytes(n - len(request))


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return _answer(request)


async def _echo_stream(requests, context):  # type: ignore[no-untyped-def]
    async for request in requests:
        yield _answer(request)


def _evaluate_batch(data: bytes) -> bytes:
    """The Batch prototype: every item evaluated in turn, one reply item each."""
    from lossd._framing import _fields, join, length_delimited
    from lossd.server.rpc import handle_evaluate_bytes
    from lossd.server.losses import REGISTRY, LossError
    from lossd.v1 import lossd_pb2

    view = memoryview(data)
    out: list[bytes | memoryview] = []
    for _, _, _, start, end in _fields(view, 0, len(view)):
        request = lossd_pb2.EvaluateLossRequest.FromString(view[start:end])
        try:
            item = length_delimited(2, [handle_evaluate_bytes(REGISTRY, request)])
        except LossError as e:
            error = lossd_pb2.Error(code=e.code, message=str(e), field=e.field).SerializeToString()
            item = length_delimited(3, [error])
        out += length_delimited(1, item)
    return join(out)


async def _batch(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return _evaluate_batch(request)


async def _serve(args: argparse.Namespace) -> None:
    from lossd.server import ServerConfig, create_server

    with tempfile.TemporaryDirectory(prefix="lossd-bench-") as data_dir:
        config = ServerConfig(host="127.0.0.1", port=0, device="cpu", plugins="none", data_dir=data_dir)
        if args.workers:
            config.workers = args.workers
        server = await create_server(config)
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(_echo),
            "EchoStream": grpc.stream_stream_rpc_method_handler(_echo_stream),
        }
        server.grpc_server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("lossd.bench.Echo", handlers),
            grpc.method_handlers_generic_handler(
                "lossd.bench.Batch", {"Evaluate": grpc.unary_unary_rpc_method_handler(_batch)}),
        ))
        await server.start()
        print(server.port, flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close(1)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._server")
    parser.add_argument("--no-malloc-tuning", action="store_true")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    if not args.no_malloc_tuning:
        from lossd._malloc import tune_malloc

        tune_malloc()
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
