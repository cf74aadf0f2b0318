"""Server-wide concurrency limits and keepalive (issue "Hardening", item 3, server side).

A real in-process server whose registry holds the built-in losses plus
``test_gate``, a loss that blocks on a :class:`threading.Event` (on the
evaluation thread pool: its input is above the inline size), so a test holds
exactly as many calls in flight as it wants and counts, rather than times,
what the server does. Keepalive runs against real HTTP/2 pings.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from lossd.client import Client, build_request
from lossd.client._errors import DeadlineExceeded, ResourceExhausted, Unavailable
from lossd.server import ServerConfig, create_server
from lossd.server.losses import REGISTRY, Input, Registry, register_loss
from lossd.v1 import lossd_pb2
from support.servers import scratch_dir, serve_in_thread

#: Elements of a gated call's input: above the inline size (16 KiB), so it runs on the pool.
GATED_ELEMENTS = 8192


class Gate:
    """A loss that waits until the test opens the gate; counts the calls inside it."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.inside = threading.Semaphore(0)

    def wait_inside(self, n: int) -> None:
        for _ in range(n):
            assert self.inside.acquire(timeout=60), "a gated call never reached the loss"


def _registry(gate: Gate) -> Registry:
    registry = Registry()
    for spec in REGISTRY:
        registry.add(spec)

    @register_loss("test_gate", inputs=(Input("input", "prediction", differentiable=True, aliases=("y_pred",)),),
                   description="waits for the test's gate", example=lambda dt: {"input": torch.ones(2, dtype=dt)},
                   registry=registry)
    def test_gate(input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - torch's name
        gate.inside.release()
        gate.open.wait(60)
        return (input * 0).sum()

    return registry


@contextlib.contextmanager
def serve(registry: Registry = REGISTRY, **config: Any) -> Iterator[tuple[str, Any]]:
    """A real server on 127.0.0.1:<ephemeral>; yields its address and the server object."""
    built: dict[str, Any] = {}

    async def build() -> Any:
        settings = {"device": "cpu", "plugins": "none", "data_dir": data_dir,
                    "workers": 6, **config}
        server = await create_server(ServerConfig(host="127.0.0.1", port=0, **settings), registry)
        built["server"] = server
        return server

    with scratch_dir("lossd-data-") as data_dir, serve_in_thread(build) as port:
        yield f"127.0.0.1:{port}", built["server"]


def _gated(client: Client) -> float:
    return client.evaluate("test_gate", np.zeros(GATED_ELEMENTS, np.float32), timeout=60).value


def _held_stream(address: str, release: threading.Event) -> tuple[grpc.Channel, Any]:
    """An EvaluateLossStream kept open (one item answered, then quiet) until ``release`` is set."""
    request = build_request("mse", [1.0], [0.0])[0]

    def items() -> Iterator[lossd_pb2.EvaluateLossStreamRequest]:
        yield lossd_pb2.EvaluateLossStreamRequest(id="0", request=request)
        release.wait(60)

    channel = grpc.insecure_channel(address)
    call = channel.stream_stream("/lossd.v1.LossService/EvaluateLossStream",
                                 request_serializer=lossd_pb2.EvaluateLossStreamRequest.SerializeToString,
                                 response_deserializer=lossd_pb2.EvaluateLossStreamResponse.FromString)(
        items(), timeout=60)
    assert next(call).id == "0"  # it is open, and counted
    return channel, call


def test_unary_limit_refuses_the_next_call_keeps_health_and_recovers() -> None:
    gate = Gate()
    with serve(_registry(gate), max_concurrent_rpcs=3) as (address, server), \
            ThreadPoolExecutor(3) as pool, Client(address, max_attempts=1) as client:
        limiter = server.limiter
        slow = [pool.submit(_gated, client) for _ in range(3)]
        gate.wait_inside(3)
        assert limiter.rpcs.in_flight == 3
        # Health is exempt: it answers while every slot is taken, as often as asked.
        for _ in range(5):
            assert client.health(timeout=10) == "SERVING"
            assert client.health("lossd.v1.LossService", timeout=10) == "SERVING"
        with pytest.raises(ResourceExhausted) as refused:
            client.evaluate("mse", [1.0], [0.0])
        message = str(refused.value)
        assert "max_concurrent_rpcs is 3" in message and "--max-concurrent-rpcs" in message, message
        assert "LOSSD_MAX_CONCURRENT_RPCS" in message
        with pytest.raises(ResourceExhausted):
            client.list_losses()
        assert (limiter.rpcs.in_flight, limiter.rpcs.refused) == (3, 2)
        gate.open.set()
        assert [f.result(60) for f in slow] == [0.0, 0.0, 0.0]
        assert limiter.rpcs.in_flight == 0
        assert client.evaluate("mse", [1.0], [0.0]).value == 1.0
        assert [client.evaluate("mse", [2.0], [0.0]).value for _ in range(10)] == [4.0] * 10
        assert limiter.rpcs.in_flight == 0


def test_stream_limit_counts_streams_apart_from_unary_calls() -> None:
    release = threading.Event()
    with serve(max_concurrent_streams=2, max_concurrent_rpcs=2) as (address, server):
        limiter = server.limiter
        held = [_held_stream(address, release) for _ in range(2)]
        try:
            assert limiter.streams.in_flight == 2
            with Client(address, max_attempts=1) as client:
                assert client.evaluate("mse", [1.0], [0.0]).value == 1.0  # unary calls have their own limit
                # evaluate_many's EvaluateLossBatch is a unary call too
                assert [r.value for r in client.evaluate_many([{"loss": "mse", "y_pred": [2.0], "y_true": [0.0]}])] \
                    == [4.0]
                assert client.health() == "SERVING"
                with pytest.raises(ResourceExhausted) as refused:
                    list(client.evaluate_stream([build_request("mse", [1.0], [0.0])[0]]))
                message = str(refused.value)
                assert "max_concurrent_streams is 2" in message and "--max-concurrent-streams" in message
                # TrainJob and WatchJob are streams too; a refused TrainJob submits no job.
                spec = {"model": {"linear": {}}, "loss": {"name": "mse"}, "optimizer": {"name": "sgd", "lr": 0.1},
                        "data": {"builtin": {"name": "rings"}}, "epochs": 1}
                with pytest.raises(ResourceExhausted):
                    client.submit(spec)
                with pytest.raises(ResourceExhausted):
                    list(client.watch("no-such-job", reattach=False))
                assert list(client.jobs()) == []
                # Health's streaming method (Watch) is exempt as well.
                from grpc_health.v1 import health_pb2, health_pb2_grpc

                watch = health_pb2_grpc.HealthStub(client.channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
                assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
                watch.cancel()
        finally:
            release.set()
            for channel, call in held:
                list(call)
                channel.close()
        deadline = time.monotonic() + 30  # the held streams end as their request streams close
        while limiter.streams.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert limiter.streams.in_flight == 0
        with Client(address) as client:
            assert [r.value for r in client.evaluate_stream([build_request("mse", [3.0], [0.0])[0]])] == [9.0]


def test_cancelled_calls_give_their_slots_back() -> None:
    gate = Gate()
    with serve(_registry(gate), max_concurrent_rpcs=2, max_concurrent_streams=2) as (address, server):
        limiter = server.limiter
        # Two streams the client cancels mid-call, and a unary call past its deadline.
        for _ in range(3):
            release = threading.Event()
            channel, call = _held_stream(address, release)
            call.cancel()
            release.set()
            channel.close()
        with Client(address, max_attempts=1) as client:
            with pytest.raises(DeadlineExceeded):
                client.evaluate("test_gate", np.zeros(GATED_ELEMENTS, np.float32), timeout=0.5)
            gate.wait_inside(1)
            gate.open.set()
            deadline = time.monotonic() + 30
            while (limiter.streams.in_flight or limiter.rpcs.in_flight) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (limiter.streams.in_flight, limiter.rpcs.in_flight) == (0, 0)
            assert client.evaluate("mse", [1.0], [0.0]).value == 1.0


def test_default_limits_and_http2_streams_per_connection() -> None:
    from lossd.server._connections import HEALTH_HEADROOM, connection_options

    config = ServerConfig()
    assert (config.max_concurrent_rpcs, config.max_concurrent_streams) == (256, 64)
    options = dict(connection_options(config.max_concurrent_rpcs, config.max_concurrent_streams,
                                      config.keepalive_time_s, config.keepalive_timeout_s,
                                      config.min_ping_interval_s))
    assert options["grpc.max_concurrent_streams"] == 256 + 64 + HEALTH_HEADROOM
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    with pytest.raises(ValueError, match="max_concurrent_rpcs"):
        import asyncio

        asyncio.run(create_server(ServerConfig(port=0, max_concurrent_rpcs=0)))


# --- keepalive ---------------------------------------------------------------------------------------------


def _quiet_stream(address: str, keepalive_s: float, quiet_s: float) -> str:
    """One item, ``quiet_s`` of silence with the SDK pinging every ``keepalive_s``, one more item."""
    request = build_request("mse", [1.0], [0.0])[0]

    def items() -> Iterator[Any]:
        yield request
        time.sleep(quiet_s)
        yield request

    with Client(address, keepalive_s=keepalive_s, max_attempts=1) as client:
        try:
            return f"ok {len(list(client.evaluate_stream(items())))}"
        except Unavailable as e:
            return f"cut: {e}"


def test_keepalive_pings_within_the_servers_policy_keep_a_quiet_stream() -> None:
    """Scaled down (seconds, not minutes): a server that accepts pings every 1 s, the SDK pinging
    every 1.5 s over 6 quiet seconds: the stream lives. The control, the server's default policy
    (10 s) against the same client, cuts it off (GOAWAY too_many_pings): the policy is applied."""
    with serve(min_ping_interval_s=1.0) as (allowed, _), serve() as (strict, _), ThreadPoolExecutor(2) as pool:
        kept = pool.submit(_quiet_stream, allowed, 1.5, 6.0)
        control = pool.submit(_quiet_stream, strict, 1.5, 6.0)
        assert kept.result(60) == "ok 2"
        assert control.result(60).startswith("cut:") and "ping" in control.result().lower(), control.result()


class _Blackhole:
    """A TCP relay between a client and the server that can go silent: once ``stall`` is set it
    swallows what either side sends, like a peer that vanished without closing its socket."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self.stall = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._target)
                self._sockets += [client, server]
                for a, b in ((client, server), (server, client)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not self.stall.is_set():
                    sink.sendall(data)

    def close(self) -> None:
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


def test_keepalive_finds_a_dead_peer_and_frees_its_stream() -> None:
    """The client's side of the connection goes silent mid-stream (no FIN, no RST): the server's
    keepalive ping goes unanswered, it drops the connection, and the stream's slot comes back."""
    with serve(keepalive_time_s=1.0, keepalive_timeout_s=1.0) as (address, server):
        limiter = server.limiter
        relay = _Blackhole(address)
        release = threading.Event()
        try:
            channel, call = _held_stream(relay.address, release)
            assert limiter.streams.in_flight == 1
            relay.stall.set()
            deadline = time.monotonic() + 30
            while limiter.streams.in_flight and time.monotonic() < deadline:
                time.sleep(0.1)
            assert limiter.streams.in_flight == 0, "the server kept the dead peer's stream"
            waited = 30 - (deadline - time.monotonic())
            assert waited < 20, waited
        finally:
            release.set()
            relay.close()
            call.cancel()
            channel.close()
        with Client(address) as client:
            assert client.evaluate("mse", [1.0], [0.0]).value == 1.0


def test_open_health_watch_streams_are_capped_and_check_stays_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Health is open (no token) and exempt from the limits; each open Watch holds memory, and 3,732 of them from
    a caller without the token took 87 MB (an audit, 2026-12-06). Watches beyond MAX_HEALTH_WATCHES (2 here)
    are RESOURCE_EXHAUSTED; Check, what probes use, is never refused; a closed Watch frees its place."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from lossd.server.interceptors import _concurrency
    from support.servers import start_in_process

    monkeypatch.setattr(_concurrency, "MAX_HEALTH_WATCHES", 2)
    with start_in_process(token="a-token-long-enough-0123456789") as address, grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watches = [stub.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(2)]
        assert [next(w).status for w in watches] == [health_pb2.HealthCheckResponse.SERVING] * 2
        with pytest.raises(grpc.RpcError) as refused:
            next(stub.Watch(health_pb2.HealthCheckRequest(), timeout=60))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
        assert "health Watch streams in flight: at most 2; probe with Check" in refused.value.details()
        for _ in range(5):
            assert stub.Check(health_pb2.HealthCheckRequest(), timeout=30).status == \
                health_pb2.HealthCheckResponse.SERVING
        watches[0].cancel()
        deadline = time.monotonic() + 10
        while True:  # the cancelled stream's place is given back when the server sees its end
            again = stub.Watch(health_pb2.HealthCheckRequest(), timeout=60)
            try:
                assert next(again).status == health_pb2.HealthCheckResponse.SERVING
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline, e
                time.sleep(0.05)
        again.cancel()
        watches[1].cancel()
