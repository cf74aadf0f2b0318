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


@pytest.mark.parametrize("name", ["max_tensor_elements", "max_request_elements", "max_tensors", "max_terms",
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
