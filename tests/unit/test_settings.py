"""lossd._settings: one boolean parser, refusals naming the variable, flags from a table."""

from __future__ import annotations

import argparse

import pytest

from lossd._settings import Setting, SettingError, add_flags, float_in, int_in, optional, parse_bool, read_env

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


@pytest.mark.parametrize("text, value", [("0", 0), ("65535", 65535), (" 80 ", 80), ("+7", 7)])
def test_a_whole_number_in_range_is_taken(text: str, value: int) -> None:
    assert int_in(0, 65535)(text) == value


@pytest.mark.parametrize("text", ["-1", "65536", "1.5", "", "inf", "nan", "port"])
def test_a_whole_number_out_of_range_is_refused_naming_the_variable_and_the_range(text: str) -> None:
    port = Setting("port", "LOSSD_PORT", int_in(0, 65535, "0 picks a free one"), 50051, "port", "--port")
    with pytest.raises(SettingError) as e:
        port.from_env({"LOSSD_PORT": text})
    assert str(e.value).startswith(f"LOSSD_PORT={text!r}: ")
    assert str(e.value).endswith("must be a whole number from 0 to 65535 (0 picks a free one)")


def test_a_whole_number_without_an_upper_bound() -> None:
    assert int_in(1)(str(10**30)) == 10**30
    with pytest.raises(ValueError, match=r"^must be a whole number >= 1$"):
        int_in(1)("0")


@pytest.mark.parametrize("text", ["-0.5", "inf", "-inf", "nan", "1e400", "ten"])
def test_a_number_out_of_range_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"must be a finite number of seconds >= 0$"):
        float_in(0, unit="seconds")(text)


def test_a_number_with_an_open_low_end_and_a_high_end() -> None:
    parse = float_in(0, 2.5, above=True)
    assert parse("2.5") == 2.5 and parse("1e-9") == 1e-9
    for text in ("0", "2.5000001"):
        with pytest.raises(ValueError, match=r"^must be a finite number > 0 and <= 2.5$"):
            parse(text)
