"""ruff and mypy over the lossd sources; shared by make, pre-commit and tests/repo/test_lint.py.

Run as a script (``python tests/support/lint.py [ruff|mypy]``) it runs the
named checks (default: both) and exits non-zero on any finding; ``make check``,
``make lint`` and the pre-commit hooks (``.pre-commit-config.yaml``) call it.
Settings live in pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``); this file
only says *what* is checked and *how mypy finds it*.

``python tests/support/lint.py fix`` repairs what ruff can repair mechanically
without reformatting whole files: it sorts the import blocks (rule I001) and
re-wraps each over-long statement (E501) with ``ruff format`` on that
statement's lines only; it prints what is left (a long comment, docstring or
string wants a hand) and exits 1 if anything is.

Why the staging: setuptools ``package-dir`` maps ``proto/lossd`` -> ``lossd``,
``client/`` -> ``lossd.client`` and ``server/`` -> ``lossd.server``. The editable
install realises that with an import hook that mypy cannot follow, and
``mypy client/`` would call the package ``client``. :func:`stage_packages` lays
out ``<dir>/lossd/`` as symlinks to the real files under their import names,
and mypy runs with ``MYPYPATH=<dir>`` (``<dir>`` is ``.mypy_cache/stage``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["MYPY_MODULES", "REPO", "RUFF_PATHS", "run_fix", "run_mypy", "run_ruff", "stage_packages"]

REPO = Path(__file__).resolve().parents[2]

#: Source folders ruff checks (generated stubs are excluded in pyproject.toml).
RUFF_PATHS = ("client", "server", "proto/lossd")
#: Modules mypy checks, by import name, under ``--strict`` (pyproject.toml).
MYPY_MODULES = ("lossd",)


def _package_dirs() -> dict[str, str]:
    """``[tool.setuptools] package-dir`` from pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the mapping as of this writing
        return {"lossd": "proto/lossd", "lossd.client": "client", "lossd.server": "server"}
    with open(REPO / "pyproject.toml", "rb") as f:
        data = tomllib.load(f)
    mapping: dict[str, str] = data["tool"]["setuptools"]["package-dir"]
    return mapping


def stage_packages(dest: Path) -> Path:
    """Symlink the sources into ``dest`` under their import names; returns ``dest``.

    The root package's folder is a real directory holding links to its entries,
    so that mapped subpackages (``client``, ``server``) can be linked beside
    them; a subpackage whose folder already appears through its parent is left
    as it is.
    """
    mapping = _package_dirs()
    for name in sorted(mapping, key=lambda n: n.count(".")):
        src = (REPO / mapping[name]).resolve()
        target = dest.joinpath(*name.split("."))
        if target.exists():
            if target.resolve() != src:
                raise RuntimeError(f"{name}: {target} is {target.resolve()}, package-dir says {src}")
            continue
        if "." not in name:
            target.mkdir(parents=True)
            for entry in src.iterdir():
                if entry.name not in ("__pycache__",):
                    (target / entry.name).symlink_to(entry)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(src, target_is_directory=True)
    return dest


def run_ruff() -> subprocess.CompletedProcess[str]:
    """``ruff check`` over :data:`RUFF_PATHS`."""
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *RUFF_PATHS],
        cwd=REPO, capture_output=True, text=True, check=False,
    )


def run_fix(paths: tuple[str, ...] = RUFF_PATHS, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Sort import blocks and re-wrap over-long statements under ``paths``; then ``ruff check``.

    Only the offending import blocks and statements change (``ruff format --range``
    per over-long line, from the bottom of each file up so that line numbers hold),
    so the edit merges like a hand edit. Returns the final ``ruff check``: what it
    still reports needs a hand.
    """
    ruff = [sys.executable, "-m", "ruff"]

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ruff, *args], cwd=cwd, capture_output=True, text=True, check=False)

    call("check", "--no-cache", "--select", "I001", "--fix", "--quiet", *paths)
    found = call("check", "--no-cache", "--select", "E501", "--output-format", "json", *paths)
    lines: dict[str, set[int]] = {}
    for finding in json.loads(found.stdout or "[]"):
        lines.setdefault(finding["filename"], set()).add(finding["location"]["row"])
    for filename, rows in lines.items():
        for row in sorted(rows, reverse=True):
            call("format", "--no-cache", "--quiet", f"--range={row}:1-{row + 1}:1", filename)
    return call("check", "--no-cache", *paths)


def run_mypy() -> subprocess.CompletedProcess[str]:
    """``mypy`` (strict, per pyproject.toml) over :data:`MYPY_MODULES`.

    The staged tree lives at one path, ``.mypy_cache/stage``, relaid on every run:
    mypy's cache records file paths, so a fresh temporary folder per run would leave
    cached modules reporting the paths of an earlier run. A lock file serialises
    concurrent runs (say ``make check`` beside the test suite), which share the cache.
    """
    cache = REPO / ".mypy_cache"
    cache.mkdir(exist_ok=True)
    with open(cache / "stage.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stage = cache / "stage"
        shutil.rmtree(stage, ignore_errors=True)  # links only: their targets stay
        stage_packages(stage)
        packages = [arg for m in MYPY_MODULES for arg in ("-p", m)]
        env = {**os.environ, "MYPYPATH": str(stage)}
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
             "--cache-dir", str(cache), *packages],
            cwd=REPO, env=env, capture_output=True, text=True, check=False,
        )
        # Report the real files (client/_codec.py), not the staged links.
        mapping = _package_dirs()
        for name in sorted(mapping, key=lambda n: -n.count(".")):
            staged = stage.joinpath(*name.split("."))
            real = mapping[name].rstrip("/") + "/"
            for shown in (f"{staged}{os.sep}", f"{staged.relative_to(REPO)}{os.sep}"):  # mypy shows either
                result.stdout = result.stdout.replace(shown, real)
                result.stderr = result.stderr.replace(shown, real)
        return result


def main(argv: list[str] | None = None) -> int:
    """Run the named checks (``ruff``, ``mypy``, ``fix``; default ruff and mypy); 1 if any finds something."""
    checks = {"ruff": run_ruff, "mypy": run_mypy, "fix": run_fix}
    names = argv if argv else ["ruff", "mypy"]
    unknown = [n for n in names if n not in checks]
    if unknown:
        print(f"usage: lint.py [{'|'.join(checks)} ...]; unknown: {' '.join(unknown)}", file=sys.stderr)
        return 2
    failed = False
    for name in names:
        result = checks[name]()
        output = (result.stdout + result.stderr).strip()
        print(f"== {name}: {'ok' if result.returncode == 0 else 'FAILED'}")
        if output:
            print(output)
        failed |= result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
