"""SDK connection behaviour against real servers: gRPC's own retries (counted on the server),
round_robin over several addresses, deadlines, TLS, mTLS, bearer tokens, compression,
message limits, and rich error details.

TLS, tokens and fault injection use the test-only gated server (tests/support/gated.py:
the real LossService behind server interceptors), which can fail calls on purpose; the
server's own TLS, mTLS and token checks are tested in test_security.py.
"""

from __future__ import annotations

import asyncio
import math
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from lossd.client import (
    AsyncClient,
    Cancelled,
    Client,
    ClientConfig,
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    build_request,
)
from support.certs import Pki, make_pki
from support.gated import RefuseFirst, RequireToken, start_gated
from support.tools import run_tool, tool_env, tool_path

EVALUATE = "/lossd.v1.LossService/EvaluateLoss"
LIST = "/lossd.v1.LossService/ListLosses"
STREAM = "/lossd.v1.LossService/EvaluateLossStream"
HEALTH = "/grpc.health.v1.Health/Check"


@pytest.fixture()
def refused_twice() -> Iterator[tuple[str, RefuseFirst]]:
    gate = RefuseFirst(2)
    with start_gated([gate]) as address:
        yield address, gate


# --- retries: inside the channel, from the service config ---------------------------------


def test_idempotent_calls_are_retried_by_the_channel(refused_twice: tuple[str, RefuseFirst]) -> None:
    address, gate = refused_twice
    with Client(address) as c:
        assert c.evaluate("mse", [1.0, 2.0], [0.0, 0.0]).value == 2.5
        assert c.list_losses("mse")[0].name == "mse_loss"
        assert c.health() == "SERVING"
    # one SDK call each; the server saw the two refused attempts and the one that worked
    assert gate.calls[EVALUATE] == 3 and gate.calls[LIST] == 3 and gate.calls[HEALTH] == 3


def test_async_client_retries_the_same_way(refused_twice: tuple[str, RefuseFirst]) -> None:
    address, gate = refused_twice

    async def main() -> float | None:
        async with AsyncClient(address) as c:
            return (await c.evaluate("mse", [3.0], [0.0])).value

    assert asyncio.run(main()) == 9.0
    assert gate.calls[EVALUATE] == 3


def test_max_attempts_one_turns_retries_off(refused_twice: tuple[str, RefuseFirst]) -> None:
    address, gate = refused_twice
    with Client(address, max_attempts=1) as c, pytest.raises(Unavailable) as err:
        c.evaluate("mse", [1.0], [0.0])
    assert gate.calls[EVALUATE] == 1 and "refused attempt 1" in err.value.message


def test_too_few_attempts_raise_unavailable(refused_twice: tuple[str, RefuseFirst]) -> None:
    address, gate = refused_twice
    with Client(address, max_attempts=2) as c, pytest.raises(Unavailable):
        c.evaluate("mse", [1.0], [0.0])
    assert gate.calls[EVALUATE] == 2


def test_the_stream_is_not_retried(refused_twice: tuple[str, RefuseFirst]) -> None:
    address, gate = refused_twice
    request = build_request("mse", [1.0], [0.0])[0]
    with Client(address) as c, pytest.raises(Unavailable):
        list(c.evaluate_stream([request]))
    assert gate.calls[STREAM] == 1


def test_other_codes_are_not_retried() -> None:
    gate = RefuseFirst(1, grpc.StatusCode.INTERNAL)
    with start_gated([gate]) as address, Client(address) as c, pytest.raises(Exception) as err:
        c.evaluate("mse", [1.0], [0.0])
    assert err.value.code == grpc.StatusCode.INTERNAL and gate.calls[EVALUATE] == 1  # type: ignore[attr-defined]


def test_round_robin_over_several_addresses() -> None:
    a, b = RefuseFirst(0), RefuseFirst(0)
    with start_gated([a]) as first, start_gated([b]) as second:
        with Client([first, second]) as c:
            assert c.target == f"ipv4:{first},{second}"
            for _ in range(10):
                c.evaluate("mse", [1.0], [0.0])
        assert a.calls[EVALUATE] + b.calls[EVALUATE] == 10
        assert a.calls[EVALUATE] >= 3 and b.calls[EVALUATE] >= 3, (a.calls, b.calls)


# --- deadlines ------------------------------------------------------------------------------


class Slow(grpc.aio.ServerInterceptor):
    """Delays every call by ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        await asyncio.sleep(self.delay)
        return await continuation(details)


def test_default_and_per_call_deadlines() -> None:
    with start_gated([Slow(0.5)]) as address:
        with Client(address, timeout=0.2) as c:
            with pytest.raises(DeadlineExceeded):
                c.evaluate("mse", [1.0], [0.0])
            assert c.evaluate("mse", [1.0], [0.0], timeout=10).value == 1.0  # per call wins
            assert c.evaluate("mse", [1.0], [0.0], timeout=math.inf).value == 1.0  # no deadline
        with Client(address) as c:
            start = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                c.list_losses(timeout=0.1)
            assert time.monotonic() - start < 0.45


# --- TLS, mTLS, tokens ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _server_credentials(pki: Pki, mutual: bool) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(pki.read("server_key"), pki.read("server_cert"))],
        root_certificates=pki.read("ca") if mutual else None,
        require_client_auth=mutual,
    )


def test_tls_with_a_ca_file(pki: Pki) -> None:
    with start_gated(credentials=_server_credentials(pki, mutual=False)) as address:
        with Client(address, ca_file=str(pki.ca)) as c:
            assert c.config.tls and c.evaluate("mse", [2.0], [0.0]).value == 4.0
        # (max_attempts=1: a handshake failure is UNAVAILABLE, which would be retried)
        with Client(address, tls=False, max_attempts=1) as c, pytest.raises(Unavailable):  # plaintext to TLS
            c.list_losses(timeout=5)
        with Client(address, tls=True, max_attempts=1) as c, pytest.raises(Unavailable):  # unknown CA
            c.list_losses(timeout=5)


def test_a_pickled_mtls_client_with_a_token_connects_as_the_original(pki: Pki) -> None:
    """Pickling keeps the settings (files by path, the token by value); the copy reads its files when it opens."""
    gate = RequireToken("s3cret-0123456789abcdef")
    with start_gated([gate], credentials=_server_credentials(pki, mutual=True)) as address:
        with Client(address, ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key),
                    token=gate.token) as c:
            assert c.evaluate("mse", [2.0], [0.0]).value == 4.0
            again = pickle.loads(pickle.dumps(c))
        with again:
            assert again.evaluate("mse", [3.0], [0.0]).value == 9.0


def test_mutual_tls_needs_the_client_certificate(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_gated(credentials=_server_credentials(pki, mutual=True)) as address:
        with Client(address, ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                    key_file=str(pki.client_key)) as c:
            assert c.health() == "SERVING"
        with Client(address, ca_file=str(pki.ca), max_attempts=1) as c, pytest.raises(Unavailable):
            c.health(timeout=5)
        # The same from LOSSD_* variables, with the async client.
        monkeypatch.setenv("LOSSD_TARGET", address)
        monkeypatch.setenv("LOSSD_CA_FILE", str(pki.ca))
        monkeypatch.setenv("LOSSD_CERT_FILE", str(pki.client_cert))
        monkeypatch.setenv("LOSSD_KEY_FILE", str(pki.client_key))

        async def main() -> str:
            async with AsyncClient() as c:
                return await c.health()

        assert asyncio.run(main()) == "SERVING"


def test_bearer_token_is_sent_as_authorization_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = RequireToken("s3cret")
    with start_gated([gate]) as address:
        with Client(address, token="s3cret") as c:
            assert c.evaluate("mse", [1.0], [0.0]).value == 1.0
            assert len(list(c.evaluate_stream([build_request("mse", [1.0], [0.0])[0]]))) == 1
        assert gate.seen[-1]["authorization"] == "Bearer s3cret"
        assert gate.seen[-1]["user-agent"].startswith("lossd-python/")
        with Client(address) as c, pytest.raises(Unauthenticated):
            c.evaluate("mse", [1.0], [0.0])
        monkeypatch.setenv("LOSSD_TOKEN", "s3cret")
        with Client(address) as c:
            assert c.list_losses("mse")
        assert "s3cret" not in repr(Client(address).config)


def test_cli_takes_token_and_tls_options(pki: Pki) -> None:
    gate = RequireToken("t0ken")
    with start_gated([gate], credentials=_server_credentials(pki, mutual=True)) as address:
        lossd = tool_path("lossd", "pip install -e .")
        tls = ["--ca-file", str(pki.ca), "--cert-file", str(pki.client_cert), "--key-file", str(pki.client_key)]
        ok = run_tool([lossd, "--target", address, "--token", "t0ken", *tls, "health"], env=tool_env())
        assert (ok.returncode, ok.stdout.strip()) == (0, "SERVING"), ok.stderr
        refused = run_tool([lossd, "--target", address, *tls, "eval", "mse", "--y-pred", "[1.0]", "--y-true", "[0.0]"],
                           env=tool_env(LOSSD_TOKEN="wrong"))
        assert refused.returncode == 1 and refused.stderr.startswith("error: UNAUTHENTICATED"), refused.stderr
        missing = run_tool([lossd, "--ca-file", "/nonexistent/ca.pem", "losses"], env=tool_env())
        assert missing.returncode == 2 and "LOSSD_CA_FILE" in missing.stderr, missing.stderr


# --- compression, keepalive, message size ---------------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_compression_and_keepalive(server_address: str, compression: str) -> None:
    x = np.zeros(100_000, np.float32)
    with Client(server_address, compression=compression, keepalive_s=30) as c:
        assert c.evaluate("mse", x, x).value == 0.0


def test_message_size_limit_is_the_clients_too(server_address: str) -> None:
    x = np.zeros(1000, np.float32)
    with Client(server_address, max_message_bytes=2000) as c, pytest.raises(ResourceExhausted):
        c.evaluate("mse", x, x)


# --- rich error details ---------------------------------------------------------------------


def test_server_sends_bad_request_details(server_address: str) -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    from lossd.v1 import lossd_pb2_grpc

    request = build_request("ce", [[1.0, 2.0]], [0], label_smoothing=1.5)[0]
    with grpc.insecure_channel(server_address) as channel, pytest.raises(grpc.RpcError) as err:
        lossd_pb2_grpc.LossServiceStub(channel).EvaluateLoss(request, timeout=10)
    status = rpc_status.from_call(err.value)  # checks code and message agree with the trailer
    assert status is not None
    detail = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(detail)
    assert [(v.field, v.description) for v in detail.field_violations] == [
        ("params.label_smoothing", "is 1.5; must be <= 1")
    ]


def test_sdk_surfaces_field_violations(client: Client) -> None:
    with pytest.raises(InvalidArgument) as err:
        client.evaluate("ce", [[1.0, 2.0]], [5])
    assert err.value.field == "inputs.target"
    assert err.value.violations == [FieldViolation("inputs.target", err.value.message.removeprefix("inputs.target: "))]
    assert type(err.value.details[0]).__name__ == "BadRequest"


def test_unreadable_tls_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"ca_file \(LOSSD_CA_FILE\): cannot read"):
        Client("127.0.0.1:1", ca_file=str(tmp_path / "missing.pem"))


# --- deadlines and closing around job streams (an audit, 2026-12-05) ----------------------------


@pytest.fixture()
def silent_listener() -> Iterator[str]:
    """A port that accepts connections and never answers: every call waits for its deadline."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens once it is closed


SPEC = {"model": {"linear": {}}, "data": {"builtin": {"name": "moons"}}, "loss": {"name": "cross_entropy"},
        "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 1}


def test_submit_has_the_clients_deadline(silent_listener: str) -> None:
    """submit waits for one reply (the job id) but had no deadline at all, as the training streams have none:
    against a stalled server it hung forever, with the client's timeout, LOSSD_TIMEOUT or neither."""
    with Client(silent_listener, timeout=0.5) as c:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            _in_thread(lambda: c.submit(SPEC), 20)
        assert time.monotonic() - start < 5

    async def submit() -> None:
        async with AsyncClient(silent_listener, timeout=0.5) as c:
            await asyncio.wait_for(c.submit(SPEC), 20)

    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        asyncio.run(submit())
    assert time.monotonic() - start < 5


def _in_thread(fn: Any, limit: float) -> Any:
    """``fn()`` in a thread, re-raising its exception; a call still running after ``limit`` s fails the test."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still waiting after {limit} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_a_watch_re_attaches_until_its_whole_timeout_has_run_out() -> None:
    """Nothing listening: ``watch(timeout=3)`` gave up after 1.4 s, when the next backoff was longer than
    what was left, instead of trying again with what was left."""
    with Client(_closed_port(), max_attempts=1) as c:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="the timeout ran out while re-attaching"):
            list(c.watch("0123456789ab", timeout=3))
        assert 2.8 <= time.monotonic() - start < 4.5


def test_close_ends_a_job_streams_wait_to_re_attach_at_once() -> None:
    """A watch waiting between re-attaches noticed close() only when its backoff ended (up to 5 s)."""
    c = Client(_closed_port(), max_attempts=1)
    closed: dict[str, float] = {}

    def close() -> None:
        closed["at"] = time.monotonic()
        c.close()
    threading.Timer(2.0, close).start()
    with pytest.raises(Cancelled):
        _in_thread(lambda: list(c.watch("0123456789ab", timeout=60)), 20)
    assert time.monotonic() - closed["at"] < 0.5

    async def watch() -> float:
        ac = AsyncClient(_closed_port(), max_attempts=1)

        async def close_later() -> float:
            await asyncio.sleep(2.0)
            await ac.close()
            return time.monotonic()
        closing = asyncio.create_task(close_later())
        with pytest.raises(Cancelled):
            async for _ in ac.watch("0123456789ab", timeout=60):
                pass
        return time.monotonic() - await closing
    assert asyncio.run(watch()) < 0.5


def test_a_timeout_past_grpcs_clock_is_no_deadline(server_address: str) -> None:
    """Over about 7.4e9 s, gRPC's deadline overflowed and every call failed DEADLINE_EXCEEDED at once."""
    with Client(server_address, timeout=1e10) as c:
        assert c.health() == "SERVING"
        assert c.evaluate("mse", [1.0], [0.0], timeout=1e12).value == 1.0


def test_max_attempts_over_grpcs_five_counts_as_five(server_address: str) -> None:
    """gRPC clamps maxAttempts at 5 with an ERROR line per channel, and refused a service config of 2**31 or
    more: every call failed InvalidArgument ('errors validating service config')."""
    policy = ClientConfig(max_attempts=2**31).service_config()["methodConfig"][0]["retryPolicy"]
    assert policy["maxAttempts"] == 5
    with Client(server_address, max_attempts=2**31) as c:
        assert c.evaluate("mse", [1.0], [0.0]).value == 1.0
