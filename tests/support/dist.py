"""``make dist``'s build, run once per test session from a copy of the sources.

The build is ``make dist``'s command (read from the Makefile: ``python -m build``, an sdist and then
the wheel from that sdist, so a file the sdist forgets fails), from a copy of the sources so that
the working tree gets no ``build/`` or ``*.egg-info``. tests/repo/test_packaging.py reads the wheel,
tests/integration/test_dist.py installs it; the ``dist`` fixture (tests/conftest.py) builds it for
both.

>>> dist_command()
['-m', 'build', '--outdir', 'dist', '.']
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["REPO", "build_dist", "dist_command", "run_checked"]

REPO = Path(__file__).resolve().parents[2]


def run_checked(cmd: list[str], timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``cmd``'s completed process; fails the test, with the output's tail, unless it exits 0."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def dist_command() -> list[str]:
    """The command of ``make dist`` (after ``$(BIN)/python``), read from the Makefile."""
    makefile = (REPO / "Makefile").read_text()
    target = re.search(r"^dist:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert target, "the Makefile has no dist target"
    (line,) = [x.strip() for x in target.group(1).splitlines() if "-m build" in x]
    assert line == "$(BIN)/python -m build --outdir dist .", line
    return ["-m", "build", "--outdir", "dist", "."]


def build_dist(workdir: Path) -> Path:
    """Copy the sources into ``workdir/lossd`` and run ``make dist``'s build there: its ``dist`` folder."""
    src = workdir / "lossd"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", "node_modules")
    for name in ("pyproject.toml", "README.md", "LICENSE", "constraints.txt"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    for folder in ("proto", "client", "server"):
        shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    run_checked([sys.executable, *dist_command()], timeout=600, cwd=src)
    return src / "dist"
