"""lossd._settings: one boolean parser, refusals naming the variable, flags from a table."""

from __future__ import annotations

import argparse

import pytest

from lossd._settings import Setting, SettingError, add_flags, optional, parse_bool, read_env

SWITCH = Setting("reflection", "LOSSD_REFLECTION", parse_bool, True, "serve reflection", "--no-reflection")


@pytest.mark.parametrize("text", ["1", "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", " yes "])
def test_every_spelling_of_true(text: str) -> None:
    assert parse_bool(text) is True
    assert SWITCH.from_env({"LOSSD_REFLECTION": text}) is True


@pytest.mark.parametrize("text", ["0", "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", " off "])
def test_every_spelling_of_false(text: str) -> None:
    assert parse_bool(text) is False
    assert SWITCH.from_env({"LOSSD_REFLECTION": text}) is False


@pytest.mark.parametrize("text", ["", "2", "maybe", "y", "n", "t", "f", "enable", "nope", "-1", "1.0"])
def test_anything_else_is_refused_naming_the_variable(text: str) -> None:
    with pytest.raises(SettingError) as e:
        SWITCH.from_env({"LOSSD_REFLECTION": text})
    message = str(e.value)
    assert message.startswith(f"LOSSD_REFLECTION={text!r}: not a boolean")
    assert "\n" not in message


def test_unset_is_the_default_and_numbers_are_refused_naming_the_variable() -> None:
    port = Setting("port", "LOSSD_PORT", int, 50051, "port", "--port")
    assert read_env([port, SWITCH], {}) == {"port": 50051, "reflection": True}
    with pytest.raises(SettingError, match=r"^LOSSD_PORT='fifty': invalid literal"):
        port.from_env({"LOSSD_PORT": "fifty"})
    assert optional(int)("") is None


def test_flags_come_from_the_table_with_generated_help() -> None:
    parser = argparse.ArgumentParser()
    table = [
        Setting("port", "LOSSD_PORT", int, 50051, "port to bind", "--port"),
        SWITCH,
        Setting("insecure", "LOSSD_INSECURE", parse_bool, False, "no authentication", "--insecure", group="security"),
        Setting("token", "LOSSD_TOKEN", optional(str), None, "bearer token"),  # environment only
    ]
    add_flags(parser, table, defaults={"port": 9, "reflection": True, "insecure": False})
    assert vars(parser.parse_args([])) == {"port": 9, "reflection": True, "insecure": False}
    assert vars(parser.parse_args(["--no-reflection", "--insecure", "--port", "1"])) == {
        "port": 1, "reflection": False, "insecure": True}
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["port"] == "port to bind (env LOSSD_PORT; default %(default)s)"
    assert helps["reflection"] == "serve reflection (env LOSSD_REFLECTION=0)"
    assert helps["insecure"] == "no authentication (env LOSSD_INSECURE=1)"
    assert "token" not in helps
