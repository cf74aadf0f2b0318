"""Every ``LOSSD_*`` variable and ``lossd serve`` flag that the server's messages and docstrings
name is one of the settings table's (server/_config.py), so renaming a setting cannot leave a
refusal, a security message or a hint pointing at a name that no longer exists.

Modules below the table in the dependency rule (``_security``, training, the wire rules) write
the names by hand or through ``flag_name``/``env_name``; this test holds them to the table.
"""

from __future__ import annotations

import re
from pathlib import Path

from lossd.server._config import SETTINGS, build_parser

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "server").rglob("*.py"), *(REPO / "proto" / "lossd").glob("*.py")])

#: Flags of other commands that server code names: (file, flag).
OTHER_COMMANDS = {
    ("server/losses/_docs.py", "--check"),  # python -m lossd.server.losses._docs
    ("server/losses/_docs.py", "--out"),
    ("server/rpc/_request.py", "--allow-non-finite"),  # lossd eval (the SDK's CLI)
    ("proto/lossd/_settings.py", "--flag"),  # the docstring's example setting
    ("proto/lossd/_settings.py", "--no"),  # "--no-" of a switch, in a docstring
}

ENV = re.compile(r"LOSSD_[A-Z0-9_]*[A-Z0-9]")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]")


def _names(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    return sorted({(str(p.relative_to(REPO)), m) for p in SOURCES for m in pattern.findall(p.read_text("utf-8"))})


def test_the_scan_reads_the_server() -> None:
    assert ("server/_security.py", "LOSSD_TOKEN_FILE") in _names(ENV)
    assert ("server/_security.py", "--tls-client-ca") in _names(FLAG)


def test_each_variable_named_is_a_setting() -> None:
    envs = {s.env for s in SETTINGS}
    stale = [f"{where} names {env}" for where, env in _names(ENV) if env not in envs]
    assert not stale, "no such variable in server/_config.py:\n" + "\n".join(stale)


def test_each_flag_named_is_a_lossd_serve_flag() -> None:
    flags = {o for a in build_parser()._actions for o in a.option_strings}
    stale = [f"{where} names {flag}" for where, flag in _names(FLAG) if flag not in flags
             and (where, flag) not in OTHER_COMMANDS]
    assert not stale, "no such flag of `lossd serve`:\n" + "\n".join(stale)
