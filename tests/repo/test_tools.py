"""The developer loop: ``make check`` and the pre-commit hooks run the same commands, nothing fetched.

``make check`` is ruff, mypy --strict and tests/unit (the fast loop; tests/repo holds the
repository checks, which run in ``make test``). ``.pre-commit-config.yaml`` must run exactly
those steps with the project's virtualenv, from local hooks only.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _recipe(target: str) -> list[str]:
    """The command lines of a Makefile target, ``$(BIN)`` as ``.venv/bin``, ``$(PYTEST_ARGS)`` dropped."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"{target}:", line))
    commands = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        commands.append(line.strip().replace("$(BIN)", ".venv/bin").replace(" $(PYTEST_ARGS)", ""))
    return commands


def test_pre_commit_runs_the_steps_of_make_check() -> None:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    hooks = config["repos"][0]["hooks"]
    assert all(h["language"] == "system" and h["pass_filenames"] is False for h in hooks)
    assert [h["entry"] for h in hooks] == _recipe("check")


def test_make_check_is_lint_and_the_unit_tests_only() -> None:
    assert _recipe("check") == [
        ".venv/bin/python tests/support/lint.py ruff",
        ".venv/bin/python tests/support/lint.py mypy",
        ".venv/bin/python -m pytest tests/unit -q",
    ]
    assert _recipe("fix") == [".venv/bin/python tests/support/lint.py fix"]
    # The repository checks (packaging builds a wheel, the Dockerfile test starts a server...)
    # stay out of the fast loop: none of them lives in tests/unit.
    unit = {p.name for p in (REPO / "tests" / "unit").glob("test_*.py")}
    repo = {p.name for p in (REPO / "tests" / "repo").glob("test_*.py")}
    assert not unit & repo and {"test_lint.py", "test_packaging.py", "test_dockerfile.py"} <= repo
