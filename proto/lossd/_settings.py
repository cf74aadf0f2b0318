"""Settings declared once: a table of :class:`Setting` builds the config, the flags and the hints.

Each setting has a name (the config field), an environment variable, a parser
from text, a default, a help line and, when a command line may set it, a flag.
The same table then gives:

- the value from the environment (:meth:`Setting.from_env`, :func:`read_env`):
  unset means the default; text the parser refuses is a :class:`SettingError`
  naming the variable (a server refuses to start; exit 2);
- the argparse flags (:func:`add_flags`), each help line ending with its
  variable and default, generated, never written twice;
- the refusal hint that names both (:meth:`Setting.hint`).

Torch-free and grpc-free: the server and the SDK use it alike. Booleans have
one parser, :func:`parse_bool`::

    >>> reflection = Setting("reflection", "LOSSD_REFLECTION", parse_bool, True, "serve reflection",
    ...                      "--no-reflection")
    >>> [reflection.from_env({"LOSSD_REFLECTION": text}) for text in ("0", "off", "No", "FALSE", "yes")]
    [False, False, False, False, True]
    >>> reflection.from_env({})
    True
    >>> reflection.from_env({"LOSSD_REFLECTION": "maybe"})
    Traceback (most recent call last):
    ...
    lossd._settings.SettingError: LOSSD_REFLECTION='maybe': not a boolean; use 1/0, true/false, yes/no or on/off
    >>> Setting("max_tensors", "LOSSD_MAX_TENSORS", int, 1024, "most tensors", "--max-tensors").hint
    '--max-tensors, env LOSSD_MAX_TENSORS'
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = [
    "Setting",
    "SettingError",
    "add_flags",
    "env_name",
    "first_line",
    "flag_name",
    "float_in",
    "int_in",
    "optional",
    "parse_bool",
    "parse_endpoint",
    "printable",
    "read_env",
]

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class SettingError(ValueError):
    """A setting's value is refused; the message names its variable or flag and what is accepted."""


def parse_bool(text: str) -> bool:
    """The one boolean parser: ``1/0``, ``true/false``, ``yes/no``, ``on/off`` in any case
    (surrounding spaces ignored); anything else is a ``ValueError``.

    >>> parse_bool(" On "), parse_bool("0")
    (True, False)
    """
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("not a boolean; use 1/0, true/false, yes/no or on/off")


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s text, or its type's name when it has none: what a one-line refusal quotes.

    >>> first_line(ValueError("bad value\\nmore")), first_line(KeyError())
    ('bad value', 'KeyError')
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def printable(text: str) -> str:
    """``text`` with every unprintable character escaped as Python writes it (``\\n``, ``\\x1b``): for text from
    outside (a job's name, a rendezvous peer's line) shown in a terminal or a plain log, where a newline forges a
    line and an escape sequence reaches the reader's terminal.

    >>> printable("ok\\tname")
    'ok\\\\tname'
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def parse_endpoint(text: str) -> str:
    """``--rdzv-endpoint`` (``lossd serve`` and ``lossd join``): ``HOST:PORT`` with a port from 1 to 65535, or
    empty (off).

    >>> parse_endpoint("10.0.0.5:29500"), parse_endpoint("")
    ('10.0.0.5:29500', '')
    >>> parse_endpoint("10.0.0.5")
    Traceback (most recent call last):
    ...
    ValueError: not HOST:PORT (e.g. 10.0.0.5:29500)
    """
    if not text:
        return text
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("not HOST:PORT (e.g. 10.0.0.5:29500)")
    if not 1 <= int(port) <= 65535:
        raise ValueError("the port must be a whole number from 1 to 65535")
    return text


def int_in(low: int, high: int | None = None, note: str = "") -> Callable[[str], int]:
    """The parser of a whole number from ``low`` to ``high`` (``None``: no upper bound); text that is
    not a whole number, or one outside the range, is a ``ValueError`` that states the range (and
    ``note``, what a special value means).

    >>> port = int_in(0, 65535, "0 picks a free one")
    >>> port(" 8080 "), port("0")
    (8080, 0)
    >>> port("70000")
    Traceback (most recent call last):
    ...
    ValueError: must be a whole number from 0 to 65535 (0 picks a free one)
    >>> int_in(1)("1.5")
    Traceback (most recent call last):
    ...
    ValueError: not a whole number; must be a whole number >= 1
    """
    rule = f"must be a whole number from {low} to {high}" if high is not None else f"must be a whole number >= {low}"
    rule += f" ({note})" if note else ""

    def parse_int(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"not a whole number; {rule}") from None
        if value < low or (high is not None and value > high):
            raise ValueError(rule)
        return value

    parse_int.__name__ = "whole number"
    return parse_int


def float_in(low: float, high: float | None = None, *, above: bool = False, unit: str = "",
             note: str = "") -> Callable[[str], float]:
    """The parser of a finite number ``>= low`` (``> low`` when ``above``) and ``<= high`` (``None``:
    any finite number); refusals state the range, in ``unit`` when given.

    >>> grace = float_in(0, unit="seconds")
    >>> grace("2.5"), grace("0")
    (2.5, 0.0)
    >>> grace("inf")
    Traceback (most recent call last):
    ...
    ValueError: must be a finite number of seconds >= 0
    >>> float_in(0, 10, above=True)("nan")
    Traceback (most recent call last):
    ...
    ValueError: must be a finite number > 0 and <= 10
    """
    what = f"a finite number of {unit}" if unit else "a finite number"
    rule = f"must be {what} {'>' if above else '>='} {low:.10g}"
    rule += f" and <= {high:.10g}" if high is not None else ""
    rule += f" ({note})" if note else ""

    def parse_float(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"not a number; {rule}") from None
        inside = (value > low if above else value >= low) and value <= (float("inf") if high is None else high)
        if not inside or value == float("inf"):  # NaN compares False
            raise ValueError(rule)
        return value

    parse_float.__name__ = "number"
    return parse_float


def optional(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    """``parse``, except that empty text means ``None`` (unset).

    >>> optional(int)(""), optional(int)("7")
    (None, 7)
    """

    def parse_optional(text: str) -> T | None:
        return parse(text) if text else None

    parse_optional.__name__ = getattr(parse, "__name__", "value")
    return parse_optional


def env_name(name: str, prefix: str = "LOSSD_") -> str:
    """The conventional variable of setting ``name``: ``LOSSD_`` and the name in capitals.

    >>> env_name("max_terms")
    'LOSSD_MAX_TERMS'
    """
    return prefix + name.upper()


def flag_name(name: str) -> str:
    """The conventional flag of setting ``name``: ``--`` and the name with dashes.

    >>> flag_name("max_terms")
    '--max-terms'
    """
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting: config field ``name``, variable ``env``, ``parse`` (text -> value; raises
    ``ValueError`` with the reason), ``default``, ``help`` (what it does; the variable and
    default are appended), and ``flag`` (``None``: environment only).

    A boolean flag is a switch: ``--no-...`` turns the setting off, any other turns it on.
    ``group`` names the argparse group the flag goes in; ``metavar`` and ``choices`` are
    passed to argparse.
    """

    name: str
    env: str
    parse: Callable[[str], T]
    default: T
    help: str
    flag: str | None = None
    group: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def is_switch(self) -> bool:
        """Whether the setting is a boolean (its flag takes no value)."""
        return self.parse is parse_bool

    @property
    def hint(self) -> str:
        """How to change the setting, for refusals: ``--flag, env VAR`` (the variable alone
        without a flag)."""
        return f"{self.flag}, env {self.env}" if self.flag else f"env {self.env}"

    def read(self, text: str) -> T:
        """``text`` (from :attr:`env`) parsed; a :class:`SettingError` naming the variable."""
        try:
            return self.parse(text)
        except (ValueError, TypeError) as e:
            reason = first_line(e)
            raise SettingError(f"{self.env}={text!r}: {reason}") from None

    def from_env(self, environ: Mapping[str, str] | None = None) -> T:
        """The value from the environment (``os.environ`` unless given), else the default."""
        text = (os.environ if environ is None else environ).get(self.env)
        return self.default if text is None else self.read(text)

    def flag_help(self) -> str:
        """The flag's help: :attr:`help`, then the variable and the default, generated."""
        if self.is_switch:
            value = "0" if (self.flag or "").startswith("--no-") else "1"
            return f"{self.help} (env {self.env}={value})"
        if self.default is None or self.default == "":
            return f"{self.help}; off by default (env {self.env})"
        return f"{self.help} (env {self.env}; default %(default)s)"


def read_env(settings: Iterable[Setting[Any]], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every setting's value, by name: from the environment, else its default.

    >>> read_env([Setting("port", "LOSSD_PORT", int, 50051, "port")], {"LOSSD_PORT": "0"})
    {'port': 0}
    """
    return {s.name: s.from_env(environ) for s in settings}


def add_flags(
    parser: argparse.ArgumentParser,
    settings: Iterable[Setting[Any]],
    defaults: Mapping[str, Any] | None = None,
    groups: Mapping[str, str] | None = None,
) -> None:
    """Add a flag for every setting that has one; ``dest`` is the setting's name.

    ``defaults`` are the flags' defaults by name (else each setting's
    :meth:`~Setting.from_env`); ``groups`` gives each group title its description.

    >>> parser = argparse.ArgumentParser()
    >>> add_flags(parser, [Setting("port", "LOSSD_PORT", int, 50051, "port", "--port"),
    ...                    Setting("reflection", "LOSSD_REFLECTION", parse_bool, True, "reflection",
    ...                            "--no-reflection")], defaults={"port": 1, "reflection": True})
    >>> vars(parser.parse_args(["--port", "7", "--no-reflection"]))
    {'port': 7, 'reflection': False}
    """
    made: dict[str, Any] = {}
    for s in settings:
        if s.flag is None:
            continue
        target: Any = parser
        if s.group:
            if s.group not in made:
                made[s.group] = parser.add_argument_group(s.group, (groups or {}).get(s.group))
            target = made[s.group]
        default = defaults[s.name] if defaults is not None and s.name in defaults else s.from_env()
        if s.is_switch:
            action = "store_false" if s.flag.startswith("--no-") else "store_true"
            target.add_argument(s.flag, dest=s.name, action=action, default=default, help=s.flag_help())
            continue
        target.add_argument(s.flag, dest=s.name, type=s.parse, default=default, help=s.flag_help(),
                            metavar=s.metavar, choices=s.choices)
