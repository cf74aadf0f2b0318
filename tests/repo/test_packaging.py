"""The distribution: one wheel, import names under ``lossd``, a client that needs no torch.

Reads the wheel of ``make dist`` (built once per session from a copy of the sources: the
``dist`` fixture), checks its files and its metadata. That it installs into a fresh virtualenv
without torch and gives a working client SDK: tests/integration/test_dist.py.
"""

from __future__ import annotations

import email.parser
import re
import zipfile
from pathlib import Path

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


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    """The wheel of ``make dist`` (built once per session: tests/support/dist.py)."""
    (built,) = dist.glob("lossd-*.whl")
    return built


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
    assert re.search(r"^lossd\s*=\s*lossd\.console:main\s*$", text, re.M), text  # (it calls lossd.client.cli.main)
