"""ruff and mypy --strict pass (settings in pyproject.toml; runner in tests/support/lint.py)."""

from __future__ import annotations

from support.lint import MYPY_MODULES, RUFF_PATHS, run_mypy, run_ruff


def test_ruff_finds_nothing() -> None:
    result = run_ruff()
    assert result.returncode == 0, f"ruff check {' '.join(RUFF_PATHS)}:\n{result.stdout}{result.stderr}"


def test_mypy_strict_finds_nothing() -> None:
    result = run_mypy()
    assert result.returncode == 0, f"mypy on {', '.join(MYPY_MODULES)}:\n{result.stdout}{result.stderr}"
