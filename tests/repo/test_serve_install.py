"""``make run`` installs what serving needs and nothing else (issue 19, item 1).

``make run`` depends on ``serve-venv`` only (``lossd[server]``); the dev tools come with
``make venv`` (``make test``, ``make check``). Two checks: ``make -n`` shows which pip
commands each target runs in a venv that does not exist yet, and pip resolves
``lossd[server]`` against ``constraints.txt`` (``--dry-run``: nothing installed) to a
set with torch and without any of the dev extra's tools.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _pip_installs(target: str, venv: Path) -> list[str]:
    """The ``pip install`` command lines ``make TARGET`` would run for a new ``venv``."""
    proc = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=True)
    return [line for line in proc.stdout.splitlines() if "-m pip install" in line]


def _name(requirement: str) -> str:
    """A distribution's normalized name (PEP 503), e.g. ``grpcio_tools>=1.60`` -> ``grpcio-tools``."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _extra(name: str) -> set[str]:
    import tomllib  # Python 3.11+

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {_name(r) for r in pyproject["project"]["optional-dependencies"][name]}


def test_make_run_installs_the_server_extra_only(tmp_path: Path) -> None:
    installs = _pip_installs("run", tmp_path / "venv")
    assert installs == [f"{tmp_path / 'venv'}/bin/python -m pip install --disable-pip-version-check --quiet "
                        "-e '.[server]' -c constraints.txt"], installs
    # make test and make check add the dev tools on top, in a second step
    for target in ("test", "check"):
        steps = _pip_installs(target, tmp_path / "venv")
        assert steps[0] == installs[0] and any("-e '.[server,dev]'" in s for s in steps[1:]), (target, steps)


@pytest.mark.slow
def test_server_extra_resolves_without_dev_tools(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
         "--disable-pip-version-check", "--report", str(report), "-e", ".[server]", "-c", "constraints.txt"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    names = {_name(i["metadata"]["name"]) for i in json.loads(report.read_text())["install"]}
    assert {"lossd", "torch", "grpcio", "grpcio-reflection", "grpcio-health-checking"} <= names, names
    dev_only = _extra("dev") - _extra("server")
    assert {"pytest", "mypy", "ruff", "hypothesis", "grpcio-tools"} <= dev_only
    assert not names & dev_only, f"make run would install dev tools: {sorted(names & dev_only)}"


def test_make_run_says_where_lossd_is() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe and "source $(BIN)/activate' puts it on PATH" in recipe.group(1)
