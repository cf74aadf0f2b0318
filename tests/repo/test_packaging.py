"""The distribution: one wheel, import names under ``lossd``, a client that needs no torch.

Builds the wheel once from a copy of the sources (so the working tree gets no
``build/`` or ``*.egg-info``), then checks its files, its metadata, and that
``pip install lossd`` into a fresh virtualenv without torch gives a working
client SDK.
"""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
#: The source folders and what they are called once installed (pyproject's package-dir).
SOURCE_ROOTS = {"proto/lossd": "lossd", "client": "lossd/client", "server": "lossd/server"}
# googleapis-common-protos (pure Python, needs only protobuf): the SDK decodes the
# google.rpc.Status / BadRequest details of errors into err.field / err.violations.
BASE_DEPS = {"grpcio", "protobuf", "numpy", "googleapis-common-protos"}
# grpcio-status: the server attaches google.rpc.BadRequest details to request errors.
SERVER_EXTRA = {"torch", "grpcio-reflection", "grpcio-health-checking", "grpcio-status"}


def _run(cmd: list[str], timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", "node_modules")
    for name in ("pyproject.toml", "README.md", "LICENSE", "constraints.txt"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    for folder in ("proto", "client", "server"):
        shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), str(src)],
         timeout=180, cwd=tmp)
    (built,) = dist.glob("lossd-*.whl")
    yield built


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(zf.read(meta).decode())


def test_wheel_holds_the_lossd_packages(wheel_names: set[str]) -> None:
    for required in (
        "lossd/__init__.py", "lossd/py.typed", "lossd/_wire.py",
        "lossd/v1/__init__.py", "lossd/v1/lossd_pb2.py", "lossd/v1/lossd_pb2.pyi",
        "lossd/v1/lossd_pb2_grpc.py", "lossd/v1/lossd.proto",
        "lossd/client/__init__.py", "lossd/client/py.typed",
        "lossd/server/__init__.py", "lossd/server/__main__.py", "lossd/server/losses/__init__.py",
    ):
        assert required in wheel_names, f"{required} missing from the wheel"
    top = {n.split("/")[0] for n in wheel_names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"lossd"}, f"unexpected top-level entries: {sorted(top - dist_info - {'lossd'})}"


def test_wheel_has_every_source_module(wheel_names: set[str]) -> None:
    """A new subpackage (say server/training/) must be listed in pyproject's packages."""
    missing = []
    for root, installed in SOURCE_ROOTS.items():
        for path in (REPO / root).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            name = f"{installed}/{path.relative_to(REPO / root).as_posix()}"
            if name not in wheel_names:
                missing.append(name)
    assert not missing, f"not in the wheel (add the package to [tool.setuptools] packages): {sorted(missing)}"


def _requirements(wheel: Path) -> tuple[set[str], dict[str, set[str]]]:
    base: set[str] = set()
    extras: dict[str, set[str]] = {}
    for req in _metadata(wheel).get_all("Requires-Dist") or []:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
        assert m, req
        name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        if extra:
            extras.setdefault(extra.group(1), set()).add(name)
        else:
            base.add(name)
    return base, extras


def test_metadata_client_deps_and_server_extra(wheel: Path) -> None:
    meta = _metadata(wheel)
    assert meta["Name"] == "lossd"
    base, extras = _requirements(wheel)
    assert base == BASE_DEPS, f"`pip install lossd` must bring exactly {BASE_DEPS}, got {base}"
    assert extras.get("server") == SERVER_EXTRA, f"[server] extra is {extras.get('server')}"
    assert "torch" not in base


def test_wheel_declares_the_lossd_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        (ep,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(ep).decode()
    assert re.search(r"^lossd\s*=\s*lossd\.client\.cli:main\s*$", text, re.M), text


CLIENT_CHECK = textwrap.dedent(
    """
    import importlib.util, sys
    assert importlib.util.find_spec("torch") is None, "torch is installed in the client-only venv"
    import lossd, lossd.client
    from lossd.v1 import lossd_pb2, lossd_pb2_grpc
    assert "torch" not in sys.modules, "importing lossd.client imported torch"
    msg = lossd.client.encode([1.0, 2.0])
    assert (msg.dtype, list(msg.shape), len(msg.raw)) == ("float32", [2], 8), msg
    assert lossd.client.decode(msg).tolist() == [1.0, 2.0]
    assert lossd.Client is lossd.client.Client
    c = lossd.client.Client("127.0.0.1:1")
    c.close()
    lossd.client.AsyncClient("127.0.0.1:1")
    from lossd.client._errors import from_status_name  # google.rpc (googleapis-common-protos) is there
    assert from_status_name("INVALID_ARGUMENT", "x: y", "x").violations[0].field == "x"
    try:
        import lossd.client.torch
    except ModuleNotFoundError as e:
        assert e.name == "torch", e
    else:
        raise AssertionError("lossd.client.torch imported without torch")
    assert "torch" not in sys.modules
    print("client-ok", lossd.__version__, lossd.__file__)
    """
)


def test_client_installs_and_imports_without_torch(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # No pip inside the new venv (faster); this interpreter's pip installs into it.
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--disable-pip-version-check",
         "-c", str(REPO / "constraints.txt"), str(wheel)],
        timeout=240,
    )
    out = _run([str(py), "-c", CLIENT_CHECK], timeout=120, cwd=tmp_path).stdout
    assert "client-ok" in out
    assert str(venv) in out, f"lossd imported from outside the new venv: {out}"
