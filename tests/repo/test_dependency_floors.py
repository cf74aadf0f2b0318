"""Security floors of the dependencies (issue "Hardening", item 8; docs/security.md).

pyproject.toml states each floor with its reason; here: the floors are at
least the security fixes, the versions installed meet them, and protobuf
parses with its upb backend (C, bounded recursion), not the pure-Python one.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = (REPO / "pyproject.toml").read_text(encoding="utf-8")

#: The oldest version with every fix the issue names, and the advisories the comment must cite.
SECURITY_FLOORS = {
    "grpcio": ((1, 65, 4), ("CVE-2023-44487", "CVE-2024-7246")),
    "protobuf": ((6, 33, 5), ("CVE-2024-7254", "CVE-2025-4565", "CVE-2026-0994")),
    "torch": ((2, 10), ("CVE-2025-32434",)),
}


def _version(text: str) -> tuple[int, ...]:
    """``2.13.0+cpu`` -> (2, 13, 0)."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def _declared_floor(package: str) -> tuple[int, ...]:
    m = re.search(rf'^\s*"{re.escape(package)}>=([0-9.]+)"', PYPROJECT, re.M)
    assert m, f"pyproject.toml declares no floor for {package}"
    return _version(m.group(1))


@pytest.mark.parametrize("package", sorted(SECURITY_FLOORS))
def test_floor_is_past_the_security_fixes_and_says_why(package: str) -> None:
    minimum, advisories = SECURITY_FLOORS[package]
    assert _declared_floor(package) >= minimum
    for advisory in advisories:
        assert advisory in PYPROJECT, f"pyproject.toml does not say why {package} has its floor ({advisory})"
        assert advisory in (REPO / "docs" / "security.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("package", sorted(SECURITY_FLOORS))
def test_installed_version_meets_the_floor(package: str) -> None:
    assert _version(metadata.version(package)) >= _declared_floor(package)


def test_protobuf_parses_with_upb() -> None:
    from google.protobuf.internal import api_implementation

    assert api_implementation.Type() == "upb", (
        "protobuf runs its pure-Python backend (PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, or a "
        "pure-Python wheel): install the binary wheel; docs/security.md, Dependencies")


def test_the_stubs_refuse_an_older_grpc_runtime() -> None:
    """Why the grpcio floor is above the security floor: the generated stubs check the runtime."""
    stub = (REPO / "proto" / "lossd" / "v1" / "lossd_pb2_grpc.py").read_text(encoding="utf-8")
    generated = re.search(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", stub)
    assert generated and _version(generated.group(1)) <= _declared_floor("grpcio")
