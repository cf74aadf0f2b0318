"""The server's settings table (server/_config.py): ServerConfig, the flags and the hints from one
place; boolean variables in every spelling; a variable that does not parse refuses the start."""

from __future__ import annotations

import dataclasses

import pytest

from lossd._settings import SettingError, env_name, flag_name
from lossd._wire import TensorLimits, check_tensors
from lossd.server._app import main
from lossd.server._config import SETTING, SETTINGS, ServerConfig, build_parser
from lossd.v1 import lossd_pb2

SWITCHES = [("LOSSD_REFLECTION", "reflection"), ("LOSSD_MALLOC_TUNING", "malloc_tuning")]
FALSE = ["0", "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"]
TRUE = ["1", "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"]


def test_the_table_and_the_config_name_the_same_settings() -> None:
    assert {f.name for f in dataclasses.fields(ServerConfig)} == set(SETTING)
    assert all(s.env.startswith("LOSSD_") for s in SETTINGS)
    assert SETTING["token"].flag is None  # environment only: a flag would show the token in `ps`


@pytest.mark.parametrize("name", ["max_tensor_elements", "max_request_elements", "max_tensors", "max_terms", "max_loss_work",
                                  "max_concurrent_rpcs", "max_concurrent_streams", "max_samples", "max_epochs",
                                  "max_steps", "max_parameters", "max_world_size", "max_jobs", "max_queued_jobs",
                                  "max_classes", "max_layers", "max_layer_width", "max_job_restarts"])
def test_refusal_hints_name_the_tables_flag_and_variable(name: str) -> None:
    # lossd._wire, the concurrency limiter and training (below the settings table) name a limit by
    # the conventional flag and variable; the table must keep the convention for every such limit.
    assert (SETTING[name].flag, SETTING[name].env) == (flag_name(name), env_name(name))


def test_a_wire_refusal_names_the_flag() -> None:
    t = lossd_pb2.Tensor(dtype="float32", shape=[2], values=[1.0, 2.0])
    with pytest.raises(ValueError, match=f"\\({SETTING['max_tensors'].hint}\\)"):
        check_tensors([("inputs.a", t, None), ("inputs.b", t, None)], TensorLimits(max_tensors=1))


@pytest.mark.parametrize("env, name", SWITCHES)
@pytest.mark.parametrize("text", FALSE)
def test_every_false_spelling_turns_the_switch_off(monkeypatch: pytest.MonkeyPatch, env: str, name: str,
                                                   text: str) -> None:
    monkeypatch.setenv(env, text)
    assert getattr(ServerConfig(), name) is False
    assert getattr(build_parser().parse_args([]), name) is False


@pytest.mark.parametrize("env, name", SWITCHES)
@pytest.mark.parametrize("text", TRUE)
def test_every_true_spelling_leaves_the_switch_on(monkeypatch: pytest.MonkeyPatch, env: str, name: str,
                                                  text: str) -> None:
    monkeypatch.setenv(env, text)
    assert getattr(ServerConfig(), name) is True
    assert getattr(build_parser().parse_args([]), name) is True


@pytest.mark.parametrize("env, text", [("LOSSD_REFLECTION", "maybe"), ("LOSSD_MALLOC_TUNING", "2"),
                                       ("LOSSD_INSECURE", "sure"), ("LOSSD_PORT", "http"),
                                       ("LOSSD_GRACE_S", "ten")])
def test_a_value_that_does_not_parse_refuses_the_start(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str], env: str,
                                                      text: str) -> None:
    monkeypatch.setenv(env, text)
    with pytest.raises(SettingError, match=f"^{env}="):
        ServerConfig()
    assert main(["--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lossd serve: error: {env}={text!r}: ") and err.count("\n") == 1


#: A value outside each setting's range (or not of its kind), by setting name: every one refuses the start,
#: from its flag and from its variable alike. 0 is a valid port (a free one is picked), and a valid metrics
#: port; a count of threads, jobs, elements or bytes is at least 1; gRPC's integer arguments are C ints.
OUT_OF_RANGE = [
    ("port", "70000"), ("port", "-1"), ("port", "http"),
    ("workers", "0"), ("workers", "-1"), ("workers", "two"),
    ("max_message_bytes", "0"), ("max_message_bytes", str(2**31)),
    ("max_tensor_elements", "0"), ("max_request_elements", "0"), ("max_tensors", "0"), ("max_terms", "-3"),
    ("max_loss_work", "0"), ("max_loss_work", "-1"), ("max_loss_work", "2.5"),
    ("max_loss_work", str(2**40 + 1)), ("max_loss_work", str(10**20)),  # past 2^40 (4 TiB): the check turned off
    ("max_batch_items", "0"), ("max_batch_bytes", "0"), ("batch_window_us", "-1"),
    ("grace_s", "-1"), ("grace_s", "inf"), ("grace_s", "nan"),
    ("job_lease_s", "0"), ("job_retention", "-1"),
    ("max_jobs", "0"), ("max_jobs", "-1"), ("max_queued_jobs", "-1"),
    ("max_epochs", "0"), ("max_steps", "0"), ("max_parameters", "0"), ("max_samples", "0"),
    ("max_world_size", "0"), ("max_classes", "0"), ("max_layers", "0"), ("max_layer_width", "0"),
    ("max_job_restarts", "-1"),
    ("rdzv_endpoint", "10.0.0.5"), ("rdzv_endpoint", "10.0.0.5:70000"), ("rdzv_endpoint", ":29500"),
    ("metrics_port", "70000"), ("metrics_port", "-1"),
    ("log_format", "xml"), ("log_level", "bogus"), ("log_level", "10"),
    ("max_concurrent_rpcs", "0"), ("max_concurrent_rpcs", str(2**31)), ("max_concurrent_streams", "0"),
    ("keepalive_time_s", "0"), ("keepalive_time_s", "1e10"), ("keepalive_timeout_s", "-1"),
    ("min_ping_interval_s", "nan"),
    ("plugins", ""), ("plugins", " , "),  # named no plugin: loaded none, without a word
    ("max_terms", "1025"), ("max_tensors", "2000"),  # the wire caps every list at 1024: ignored silently above
    ("host", ""), ("host", " "), ("host", "127.0.0.1\n"),  # '' said "refusing to serve on  without authentication"
]

#: Edge values each setting takes.
IN_RANGE = [
    ("port", "0", 0), ("port", "65535", 65535), ("metrics_port", "0", 0), ("workers", "1", 1),
    ("max_message_bytes", str(2**31 - 1), 2**31 - 1), ("max_queued_jobs", "0", 0), ("batch_window_us", "0", 0),
    ("grace_s", "0", 0.0), ("max_job_restarts", "0", 0), ("log_level", "debug", "DEBUG"),
    ("log_level", " Warning ", "WARNING"), ("log_format", "json", "json"), ("keepalive_time_s", "0.001", 0.001),
    ("rdzv_endpoint", "10.0.0.5:29500", "10.0.0.5:29500"), ("rdzv_endpoint", "", ""),
    ("max_terms", "1024", 1024), ("max_tensors", "1024", 1024), ("max_loss_work", "1", 1),
    ("max_loss_work", str(2**40), 2**40), ("plugins", "none", "none"), ("plugins", "a,b", "a,b"),
    ("host", "0.0.0.0", "0.0.0.0"), ("host", "::", "::"), ("host", "localhost", "localhost"),
]


@pytest.fixture()
def never_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() as far as its settings: a value wrongly accepted fails here instead of starting a server."""
    from lossd.server import _app

    async def serve(config: ServerConfig) -> bool:
        raise AssertionError(f"the server was started with {config!r}")

    monkeypatch.setattr(_app, "serve", serve)
    monkeypatch.setattr(_app, "tune_malloc", lambda: None)
    monkeypatch.setattr(_app, "configure_logging", lambda *args, **kwargs: None)


@pytest.mark.parametrize("name, text", OUT_OF_RANGE)
def test_a_flag_out_of_range_exits_2_with_one_line_naming_it(never_serves: None, capsys: pytest.CaptureFixture[str],
                                                             name: str, text: str) -> None:
    setting = SETTING[name]
    with pytest.raises(SystemExit) as exit_:
        main([f"{setting.flag}={text}"])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"lossd serve: error: argument {setting.flag} (env {setting.env}): {text!r}: "), err


@pytest.mark.parametrize("name, text", OUT_OF_RANGE)
def test_a_variable_out_of_range_exits_2_with_one_line_naming_it(never_serves: None, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str], name: str,
                                                                 text: str) -> None:
    setting = SETTING[name]
    monkeypatch.setenv(setting.env, text)
    with pytest.raises(SettingError, match=f"^{setting.env}="):
        ServerConfig()
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith(f"lossd serve: error: {setting.env}={text!r}: "), err


@pytest.mark.parametrize("name, text, value", IN_RANGE)
def test_the_edges_of_each_range_are_taken(monkeypatch: pytest.MonkeyPatch, name: str, text: str,
                                           value: object) -> None:
    setting = SETTING[name]
    assert getattr(build_parser().parse_args([f"{setting.flag}={text}"]), name) == value
    monkeypatch.setenv(setting.env, text)
    assert getattr(ServerConfig(), name) == value


def test_every_number_setting_has_a_range() -> None:
    """A new numeric setting parsed by plain int or float (which take -1, inf and nan) fails here."""
    numbers = [s for s in SETTINGS if type(s.default) in (int, float) or s.name == "metrics_port"]
    assert len(numbers) > 25
    for s in numbers:
        for text in ("-1", "inf", "nan", "1e400"):
            with pytest.raises(SettingError):
                s.read(text)
    covered = {name for name, _ in OUT_OF_RANGE}
    assert {s.name for s in numbers} <= covered, sorted({s.name for s in numbers} - covered)


def test_an_unknown_flag_is_one_line_too(never_serves: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--prot", "5"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "lossd serve: error: unrecognized arguments: --prot 5\n"


@pytest.mark.parametrize(("given", "said"), [
    ({"max_concurrent_rpcs": 2**31}, "ServerConfig.max_concurrent_rpcs=2147483648: must be a whole number from 1 to "
                                      "1073741815 (--max-concurrent-rpcs, env LOSSD_MAX_CONCURRENT_RPCS)"),
    ({"max_message_bytes": 0}, "ServerConfig.max_message_bytes=0: must be a whole number from 1 to 2147483647"),
    ({"max_tensors": 5000}, "ServerConfig.max_tensors=5000: must be a whole number from 1 to 1024"),
    ({"workers": 2.5}, "ServerConfig.workers=2.5: not a whole number"),
    ({"workers": True}, "ServerConfig.workers=True: must not be a bool"),
    ({"reflection": "no"}, "ServerConfig.reflection='no': must be true or false"),
    ({"grace_s": float("nan")}, "ServerConfig.grace_s=nan: must be a finite number of seconds >= 0"),
    ({"host": ""}, "ServerConfig.host='': must not be empty"),
    ({"log_level": 15}, "ServerConfig.log_level=15: not a logging level"),
    ({"insecure": 2}, "ServerConfig.insecure=2: must be true or false"),
])
def test_a_config_made_in_code_is_checked_by_each_settings_own_rule(given: dict[str, object], said: str | None) -> None:
    """``ServerConfig`` is public (lossd.server): values given in code skipped the ranges a flag or a variable
    is held to, and reached gRPC or the limits (2**31 concurrent calls: an OverflowError when the server was
    built; max_message_bytes 0 or max_tensors above the wire's own cap: a server that started). An audit,
    2026-12-06."""
    with pytest.raises(SettingError) as info:
        ServerConfig(**given)  # type: ignore[arg-type]
    assert str(info.value).startswith(said), info.value


def test_a_refused_config_value_that_may_hold_a_secret_is_not_shown() -> None:
    for name in ("token", "job_store"):
        with pytest.raises(SettingError) as info:
            ServerConfig(**{name: True})  # type: ignore[arg-type]
        assert str(info.value).startswith(f"ServerConfig.{name}: must not be a bool"), info.value
    with pytest.raises(SettingError) as info:
        ServerConfig(token="a" * 20, max_jobs=0)
    assert str(info.value).startswith("ServerConfig.max_jobs=0: ") and "a" * 20 not in str(info.value)


def test_a_config_made_in_code_keeps_what_each_rule_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a flag or a variable: checked values that were kept as given broke later (log_level="debug" failed
    every training job: its worker's logging.getLevelName("debug") is "Level debug"; log_format="JSON" turned
    the JSON access log off), and values code naturally passes were refused (a review, 2026-12-06)."""
    import logging
    from pathlib import Path

    import numpy as np

    c = ServerConfig(log_level="debug", log_format="JSON", job_retention="30d", port="0", workers=2.0,
                     insecure=0, reflection=np.False_, data_dir=Path("/tmp/d"))  # type: ignore[arg-type]
    assert (c.log_level, c.log_format, c.job_retention, c.port, c.workers, c.insecure, c.reflection, c.data_dir) == \
        ("DEBUG", "json", 2592000.0, 0, 2, False, False, "/tmp/d")
    assert ServerConfig(log_level=logging.WARNING).log_level == "WARNING"  # type: ignore[arg-type]
    monkeypatch.setenv("LOSSD_MAX_JOBS", "3")
    assert (ServerConfig(max_jobs=None).max_jobs, ServerConfig(rdzv_endpoint=None).rdzv_endpoint) == (3, "")  # type: ignore[arg-type]
