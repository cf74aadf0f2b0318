"""The contract's tooling: ``buf lint`` passes and the committed stubs are what protoc makes.

``make test`` installs buf (npm ``@bufbuild/buf``, pinned in the Makefile) under
``.tools/buf`` and passes its path in ``BUF``. Without buf the lint test is
skipped on a developer's machine, but fails under ``CI=true``: CI must lint.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
#: What ``make proto`` generates for each .proto file, next to it.
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_buf() -> str | None:
    """``$BUF``, else the Makefile's repo-local install, else ``buf`` on PATH."""
    candidates = [os.environ.get("BUF"), str(REPO / ".tools/buf/node_modules/.bin/buf"), shutil.which("buf")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def test_buf_lint_passes() -> None:
    buf = find_buf()
    if buf is None:
        message = "buf not found (run `make buf`, or set BUF=/path/to/buf)"
        if _in_ci():
            pytest.fail(f"{message}; CI=true requires the lint to run")
        pytest.skip(message)
    assert (PROTO_ROOT / "buf.yaml").is_file()
    result = subprocess.run([buf, "lint"], cwd=PROTO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"buf lint (proto/buf.yaml) found problems:\n{result.stdout}{result.stderr}"


def test_committed_stubs_match_regenerated(tmp_path: Path) -> None:
    protos = proto_files()
    assert protos, "no .proto files under proto/"
    # `python -m grpc_tools.protoc` adds grpc_tools' bundled well-known types to the include path.
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}",
        f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
        *map(str, protos),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"protoc failed:\n{result.stderr}"

    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    expected = sorted(
        p.relative_to(PROTO_ROOT).with_name(p.stem + suffix) for p in protos for suffix in GENERATED_SUFFIXES
    )
    assert generated == expected, "protoc made unexpected files"
    committed = sorted(
        p.relative_to(PROTO_ROOT) for s in GENERATED_SUFFIXES for p in PROTO_ROOT.rglob(f"*{s}")
    )
    stale = sorted(set(committed) - set(generated))
    missing = [str(p) for p in generated if not (PROTO_ROOT / p).is_file()]
    differ = [str(p) for p in generated if (PROTO_ROOT / p).is_file()
              and not filecmp.cmp(tmp_path / p, PROTO_ROOT / p, shallow=False)]
    assert not (missing or differ or stale), (
        "generated stubs are out of date; run `make proto` and commit the result.\n"
        f"missing: {missing}\ndiffer: {differ}\nno .proto behind them: {[str(p) for p in stale]}"
    )


def test_buf_breaking_against_main_passes(tmp_path: Path) -> None:
    """The contract only grows: ``buf breaking`` (FILE rules, proto/buf.yaml) against main's proto/ folder."""
    buf = find_buf()
    if buf is None:
        message = "buf not found (run `make buf`, or set BUF=/path/to/buf)"
        if _in_ci():
            pytest.fail(f"{message}; CI=true requires the check to run")
        pytest.skip(message)
    git = shutil.which("git")
    has_main = git is not None and subprocess.run(
        [git, "rev-parse", "--verify", "--quiet", "main^{commit}"], cwd=REPO, capture_output=True).returncode == 0
    if not has_main:
        pytest.skip("no git branch `main` here to compare the contract with")
    assert git is not None
    archive = subprocess.run([git, "archive", "--format=tar", "main", "proto"], cwd=REPO, capture_output=True,
                             check=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive, check=True, timeout=60)
    result = subprocess.run([buf, "breaking", "--against", str(tmp_path / "proto")], cwd=PROTO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"buf breaking against main:\n{result.stdout}{result.stderr}"
