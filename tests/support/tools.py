"""Run the command-line tools the way a user does: ``lossd`` and ``grpcurl`` as real processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

__all__ = ["BIN_DIR", "tool_path", "run_tool", "tool_env"]

#: The virtualenv's bin directory: console scripts live next to the interpreter.
BIN_DIR = Path(sys.executable).parent


def tool_path(name: str, hint: str) -> str:
    """Absolute path of console script ``name``: next to ``sys.executable``, else on PATH.

    Fails the test (not skips it) when missing: ``make test`` installs both tools.
    """
    beside = BIN_DIR / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed next to {sys.executable} nor on PATH; {hint}")
    return found


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for a tool: the venv's bin first on PATH, no stray LOSSD_TARGET."""
    env = {k: v for k, v in os.environ.items() if k != "LOSSD_TARGET"}
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_tool(
    argv: Sequence[str], *, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion, capturing text output."""
    return subprocess.run(
        list(argv), env=env or tool_env(), input=input, capture_output=True, text=True, timeout=timeout
    )
