"""Client settings (arguments, LOSSD_* variables, defaults), the service config, and error decoding."""

from __future__ import annotations

import importlib
import json
import math
import re

import grpc
import numpy as np
import pytest
from google.protobuf import any_pb2, descriptor_pool
from google.rpc import error_details_pb2, status_pb2

from lossd.client import Client, ClientConfig, FieldViolation, InvalidArgument, LossdError, NotFound
from lossd._settings import parse_bool
from lossd.client._config import ENVIRONMENT, RETRIED_METHODS, SETTINGS, normalize_target
from lossd.client._errors import STATUS_DETAILS_KEY, error_class, from_rpc_error


def test_defaults_without_environment() -> None:
    cfg = ClientConfig.from_env(environ={})
    assert (cfg.target, cfg.timeout, cfg.tls, cfg.token, cfg.max_attempts) == ("127.0.0.1:50051", 60.0, False, None, 5)
    assert cfg.metadata() == () and cfg.channel_credentials() is None and cfg.channel_compression() is None
    assert "loadBalancingConfig" not in cfg.service_config()


def test_every_setting_has_an_environment_variable() -> None:
    env = {
        "LOSSD_TARGET": "10.0.0.1:1,10.0.0.2:2", "LOSSD_TIMEOUT": "2.5", "LOSSD_TOKEN": "t",
        "LOSSD_SERVER_NAME": "lossd.internal", "LOSSD_COMPRESSION": "GZIP", "LOSSD_KEEPALIVE_S": "30",
        "LOSSD_MAX_MESSAGE_BYTES": "1024", "LOSSD_MAX_ATTEMPTS": "3", "LOSSD_LOAD_BALANCING": "pick_first",
        "LOSSD_TLS": "1",
    }
    cfg = ClientConfig.from_env(environ=env)
    assert cfg.target == "ipv4:10.0.0.1:1,10.0.0.2:2" and cfg.addresses == 2
    assert (cfg.timeout, cfg.token, cfg.server_name, cfg.compression) == (2.5, "t", "lossd.internal", "gzip")
    assert (cfg.keepalive_s, cfg.max_message_bytes, cfg.max_attempts, cfg.load_balancing) == (30, 1024, 3, "pick_first")
    assert cfg.tls and cfg.channel_compression() == grpc.Compression.Gzip
    options = dict(cfg.channel_options())
    assert options["grpc.max_receive_message_length"] == options["grpc.max_send_message_length"] == 1024
    assert options["grpc.keepalive_time_ms"] == 30_000 and options["grpc.ssl_target_name_override"] == "lossd.internal"
    assert json.loads(options["grpc.service_config"])["loadBalancingConfig"] == [{"pick_first": {}}]
    # A choice is read in any case, whether from its variable or as an argument (the argument had to be lower case)
    for arg in ({"compression": "GZIP"}, {"load_balancing": "ROUND_Robin"}):
        cfg = ClientConfig.from_env("h:1", environ={}, **arg)  # type: ignore[arg-type]
        assert (cfg.compression, cfg.load_balancing) == (("gzip", None) if "compression" in arg else (None, "round_robin"))
    # The file settings are read when credentials are made (see test_unreadable...); all are named here.
    assert set(ENVIRONMENT) == {f for f in ClientConfig.__dataclass_fields__ if f not in ("addresses", "options")}
    assert all(v.startswith("LOSSD_") for v in ENVIRONMENT.values())


def test_the_settings_table_is_the_one_source() -> None:
    """ClientConfig's fields, the LOSSD_* variables and the CLI flags come from SETTINGS."""
    from lossd.client.cli import build_parser

    names = [s.name for s in SETTINGS]
    assert names == [f for f in ClientConfig.__dataclass_fields__ if f not in ("addresses", "options")]
    assert ENVIRONMENT == {s.name: s.env for s in SETTINGS}
    assert all(s.default == ClientConfig.__dataclass_fields__[s.name].default for s in SETTINGS if s.default is not None)
    flags = {o: a.dest for a in build_parser()._actions for o in a.option_strings}
    for s in SETTINGS:
        assert s.flag and flags[s.flag] == s.name, s


@pytest.mark.parametrize("text, value", [
    *[(t, True) for t in ("1", "true", "True", "YES", "on", " On ")],
    *[(t, False) for t in ("0", "false", "FALSE", "no", "Off")],
])
def test_one_boolean_parser(text: str, value: bool) -> None:
    assert parse_bool(text) is value
    assert ClientConfig.from_env(environ={"LOSSD_TLS": text}).tls is value


@pytest.mark.parametrize("text", ["", "2", "y", "enabled", "truthy"])
def test_boolean_parser_refuses_anything_else_naming_the_variable(text: str) -> None:
    with pytest.raises(ValueError, match="not a boolean; use 1/0, true/false, yes/no or on/off"):
        parse_bool(text)
    if text:  # an empty variable counts as unset
        with pytest.raises(ValueError, match=f"LOSSD_TLS={text!r}"):
            ClientConfig.from_env(environ={"LOSSD_TLS": text})


def test_arguments_win_over_the_environment() -> None:
    cfg = ClientConfig.from_env("h:1", timeout=3, token="arg", environ={"LOSSD_TARGET": "e:2", "LOSSD_TOKEN": "env",
                                                                          "LOSSD_TIMEOUT": "9"})
    assert (cfg.target, cfg.timeout, cfg.token) == ("h:1", 3.0, "arg")


def test_no_deadline_and_per_call_deadlines() -> None:
    assert ClientConfig.from_env(timeout=math.inf, environ={}).timeout is None
    assert ClientConfig.from_env(environ={"LOSSD_TIMEOUT": "inf"}).timeout is None
    cfg = ClientConfig.from_env(timeout=7, environ={})
    assert cfg.deadline(None) == 7 and cfg.deadline(1.5) == 1.5 and cfg.deadline(math.inf) is None
    assert cfg.deadline(None, default=False) is None  # e.g. a training stream


@pytest.mark.parametrize(("kwargs", "env", "message"), [
    ({"timeout": 0}, {}, "timeout: must be > 0"),
    ({}, {"LOSSD_TIMEOUT": "soon"}, "LOSSD_TIMEOUT='soon'"),
    ({}, {"LOSSD_TLS": "maybe"}, "LOSSD_TLS='maybe'"),
    ({}, {"LOSSD_MAX_ATTEMPTS": "x"}, "LOSSD_MAX_ATTEMPTS='x'"),
    ({"max_attempts": 0}, {}, "max_attempts: must be >= 1"),
    ({"compression": "br"}, {}, "compression: 'br' is not one of"),
    ({"load_balancing": "random"}, {}, "load_balancing: 'random'"),
    ({"cert_file": "c.pem"}, {}, "cert_file and key_file"),
    ({"keepalive_s": -1}, {}, "keepalive_s: must be > 0"),
    # beyond gRPC's C ints: a traceback (OverflowError) from grpc's channel arguments before
    ({"keepalive_s": 1e10}, {}, "keepalive_s: must be > 0 and <= 2147483.647 seconds"),
    ({}, {"LOSSD_MAX_MESSAGE_BYTES": "3000000000"},
     "max_message_bytes (LOSSD_MAX_MESSAGE_BYTES): must be from 1 to 2147483647"),
    ({"max_message_bytes": 0}, {}, "max_message_bytes: must be from 1 to 2147483647"),
    ({"tls": False, "ca_file": "ca.pem"}, {}, "tls is off, which contradicts ca_file:"),
    # where a value came from a variable, the error names it (it named the keywords only)
    ({}, {"LOSSD_TLS": "0", "LOSSD_CA_FILE": "ca.pem"}, "tls (LOSSD_TLS) is off, which contradicts ca_file (LOSSD_CA_FILE)"),
    ({"tls": False}, {"LOSSD_CERT_FILE": "c.pem", "LOSSD_KEY_FILE": "k.pem"},
     "tls is off, which contradicts cert_file (LOSSD_CERT_FILE)"),
    ({}, {"LOSSD_CERT_FILE": "c.pem"}, "cert_file (LOSSD_CERT_FILE) is set, key_file (LOSSD_KEY_FILE) is not"),
    ({"key_file": "k.pem"}, {}, "key_file is set, cert_file (LOSSD_CERT_FILE) is not"),
    ({"target": ["a:1", "b:2"]}, {}, "several addresses must be IP:port literals"),
    ({"target": ["127.0.0.1:1", "[::1]:2"]}, {}, "of one family"),
    ({"target": []}, {}, "no address"),
])
def test_bad_settings_name_the_setting(kwargs: dict[str, object], env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ClientConfig.from_env(environ=env, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("setting", "value", "variable", "text", "rule"), [
    ("max_attempts", 0, "LOSSD_MAX_ATTEMPTS", "0", "must be >= 1 (1 turns retries off), got 0"),
    ("timeout", -1, "LOSSD_TIMEOUT", "-1", "must be > 0 seconds (inf for no deadline), got -1"),
    ("timeout", math.nan, "LOSSD_TIMEOUT", "nan", "must be > 0 seconds (inf for no deadline), got nan"),
    ("keepalive_s", 0, "LOSSD_KEEPALIVE_S", "0", "must be > 0 and <= 2147483.647 seconds"),
    ("max_message_bytes", 0, "LOSSD_MAX_MESSAGE_BYTES", "0", "must be from 1 to 2147483647 (gRPC's largest), got 0"),
])
def test_out_of_range_names_where_the_value_came_from(setting: str, value: object, variable: str, text: str,
                                                      rule: str) -> None:
    """One rule per setting; an argument's error names the argument, a variable's the variable too
    (as a value that does not parse, or a file that cannot be read, does)."""
    with pytest.raises(ValueError) as from_argument:
        ClientConfig.from_env(environ={}, **{setting: value})  # type: ignore[arg-type]
    assert str(from_argument.value).startswith(f"{setting}: {rule}"), from_argument.value
    with pytest.raises(ValueError) as from_variable:
        ClientConfig.from_env(environ={variable: text})
    assert str(from_variable.value).startswith(f"{setting} ({variable}): {rule}"), from_variable.value
    # the argument wins over a bad variable: nothing is refused
    assert ClientConfig.from_env(environ={variable: text}, **{setting: 2}) is not None  # type: ignore[arg-type]


def test_targets() -> None:
    assert normalize_target("dns:///lossd.internal:443") == ("dns:///lossd.internal:443", 1)
    assert normalize_target("ipv4:127.0.0.1:1,127.0.0.1:2,127.0.0.1:3") == ("ipv4:127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", 3)
    assert normalize_target(["lossd.internal:443"]) == ("lossd.internal:443", 1)
    assert normalize_target("127.0.0.1:1, 127.0.0.1:2") == ("ipv4:127.0.0.1:1,127.0.0.1:2", 2)


def test_service_config_retries_idempotent_methods_only() -> None:
    sc = ClientConfig.from_env(environ={}).service_config()
    (method_config,) = sc["methodConfig"]
    names = {(n["service"], n["method"]) for n in method_config["name"]}
    assert names == set(RETRIED_METHODS)
    assert ("lossd.v1.LossService", "EvaluateLoss") in names and ("grpc.health.v1.Health", "Check") in names
    assert not any(m == "EvaluateLossStream" for _, m in names)
    policy = method_config["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"] and policy["maxAttempts"] == 5
    # Every lossd name is a real method of the contract (TrainingService: once its stubs exist).
    for module in ("lossd_pb2", "training_pb2"):
        try:
            importlib.import_module(f"lossd.v1.{module}")
        except ModuleNotFoundError:
            continue
    pool = descriptor_pool.Default()
    for service_name, method in names:
        if service_name.startswith("lossd.v1."):
            try:
                service = pool.FindServiceByName(service_name)
            except KeyError:
                assert service_name == "lossd.v1.TrainingService", service_name
                continue
            assert method in service.methods_by_name, (service_name, method)
    off = ClientConfig.from_env(max_attempts=1, environ={})
    assert "methodConfig" not in off.service_config() and dict(off.channel_options())["grpc.enable_retries"] == 0


def test_token_is_bearer_metadata_and_not_in_repr() -> None:
    cfg = ClientConfig.from_env(token="s3cret", environ={})
    assert cfg.metadata() == (("authorization", "Bearer s3cret"),)
    assert "s3cret" not in repr(cfg) and "s3cret" not in repr(Client(token="s3cret"))


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, bytes], ...] = ()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailing


def _status(*details: object) -> bytes:
    status = status_pb2.Status(code=3, message="m")
    for d in details:
        packed = any_pb2.Any()
        packed.Pack(d)  # type: ignore[arg-type]
        status.details.append(packed)
    return status.SerializeToString()


def test_rich_details_become_violations() -> None:
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="inputs.target", description="bad"),
        error_details_pb2.BadRequest.FieldViolation(field="params.margin", description="worse"),
    ])
    info = error_details_pb2.ErrorInfo(reason="X")
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "m", ((STATUS_DETAILS_KEY, _status(bad, info)),)))
    assert isinstance(err, InvalidArgument) and err.field == "inputs.target"
    assert err.violations == [FieldViolation("inputs.target", "bad"), FieldViolation("params.margin", "worse")]
    assert err.details == [bad, info]


def test_missing_or_garbled_details_are_tolerated() -> None:
    plain = from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "no such loss"))
    assert isinstance(plain, NotFound) and (plain.field, plain.violations, plain.details) == ("", [], [])
    garbled = from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "x", ((STATUS_DETAILS_KEY, b"\xff\xff"),)))
    assert garbled.details == []
    unknown = from_rpc_error(FakeRpcError(grpc.StatusCode.DATA_LOSS, ""))
    assert type(unknown) is LossdError and unknown.message == "DATA_LOSS"


def test_one_class_per_code_the_server_uses() -> None:
    for code in ("INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED", "PERMISSION_DENIED",
                 "UNAVAILABLE", "DEADLINE_EXCEEDED", "FAILED_PRECONDITION", "CANCELLED", "UNIMPLEMENTED", "INTERNAL"):
        cls = error_class(grpc.StatusCode[code])
        assert cls is not LossdError and issubclass(cls, LossdError) and cls.code.name == code


def test_replica_settings_balancing_retry_buffer_and_overrides() -> None:
    """dns: targets balance round_robin; the retry buffer holds a whole message; a caller's
    channel argument replaces the SDK's (gRPC would keep the first of two)."""
    dns = ClientConfig.from_env("dns:///lossd-eval.default.svc:50051", environ={})
    assert dns.service_config()["loadBalancingConfig"] == [{"round_robin": {}}]
    assert dns.service_config()["healthCheckConfig"] == {"serviceName": ""}
    assert "loadBalancingConfig" not in ClientConfig.from_env("lossd.example:50051", environ={}).service_config()
    pinned = ClientConfig.from_env("dns:///lossd-eval:50051", load_balancing="pick_first", environ={})
    assert pinned.service_config()["loadBalancingConfig"] == [{"pick_first": {}}]
    assert "healthCheckConfig" not in pinned.service_config()
    cfg = ClientConfig.from_env("10.0.0.1:1", max_message_bytes=1 << 20, environ={})
    assert dict(cfg.channel_options())["grpc.per_rpc_retry_buffer_size"] == 1 << 20
    assert cfg.service_config()["retryThrottling"] == {"maxTokens": 200, "tokenRatio": 1.0}
    mine = ClientConfig.from_env("10.0.0.1:1", options=[("grpc.per_rpc_retry_buffer_size", 7)], environ={})
    names = [name for name, _ in mine.channel_options()]
    assert names.count("grpc.per_rpc_retry_buffer_size") == 1
    assert dict(mine.channel_options())["grpc.per_rpc_retry_buffer_size"] == 7


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "5", True, None])
def test_a_calls_own_timeout_is_checked_as_the_clients_is(timeout: object) -> None:
    """``Client(timeout=0)`` was refused, ``evaluate(..., timeout=0)`` was not: it failed DeadlineExceeded in some
    calls and not in others, NaN and -1 always, and "5" with a TypeError naming nothing (the SDK audit, 2026-12-06)."""
    config = ClientConfig(timeout=60.0)
    if timeout is None:
        assert config.deadline(timeout) == 60.0 and config.deadline(np.float32(2)) == 2.0
        assert config.deadline(math.inf) is None
        return
    with pytest.raises(ValueError, match=r"^timeout: must be > 0 seconds \(inf for no deadline\), got "):
        config.deadline(timeout)  # type: ignore[arg-type]
