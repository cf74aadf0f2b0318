"""docs/sdk.md: every python example runs and prints what the page says; every public name is shown.

Machinery and conventions are the README's (tests/support/markdown.py). The
examples run against ``python -m lossd.server`` (``LOSSD_TARGET``), except the
one that talks to ``127.0.0.1:50443``: that address is replaced by a real server
with mutual TLS and a bearer token (``--tls-client-ca`` and ``LOSSD_TOKEN``), and the
examples' working directory holds its ``ca.pem``, ``client.pem`` and ``client.key``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import lossd.client
import lossd.client.torch
from support.certs import make_pki
from support.markdown import Example, markdown_examples, run_python_example
from support.servers import start_in_process
from support.tools import tool_env

REPO = Path(__file__).resolve().parents[2]
SDK_DOC = REPO / "docs" / "sdk.md"
TLS_ADDRESS = "127.0.0.1:50443"
TOKEN = "s3cret-0123456789abcdef"

EXAMPLES = markdown_examples(SDK_DOC.read_text(encoding="utf-8"), "docs/sdk.md")
PYTHON = [e for e in EXAMPLES if e.kind == "python"]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    pki_dir = tmp_path_factory.mktemp("sdk-pki")
    pki = make_pki(pki_dir)
    with start_in_process(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), tls_client_ca=str(pki.ca),
                          token=TOKEN) as address:
        yield address, pki_dir


@pytest.mark.parametrize("ex", PYTHON, ids=lambda e: e.id)
def test_python_example(ex: Example, served_process, tls_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    address, pki_dir = tls_server
    for name in ("ca.pem", "client.pem", "client.key"):
        shutil.copy(pki_dir / name, tmp_path / name)
    ex = Example(ex.kind, ex.code.replace(TLS_ADDRESS, address), ex.expected, ex.line, ex.source)
    run_python_example(ex, tmp_path, tool_env(LOSSD_TARGET=served_process.address))


@pytest.mark.parametrize("module", [lossd.client, lossd.client.torch], ids=lambda m: m.__name__)
def test_every_public_name_is_in_an_executed_example(module: object) -> None:
    code = "\n".join(e.code for e in PYTHON)
    missing = [n for n in module.__all__ if not re.search(rf"\b{re.escape(n)}\b", code)]  # type: ignore[attr-defined]
    assert not missing, f"docs/sdk.md has no python example using {missing}"


def test_every_python_example_shows_its_output() -> None:
    assert all(e.expected is not None for e in PYTHON if "print(" in e.code)


def test_every_client_setting_is_in_the_settings_table() -> None:
    from lossd.client._config import SETTINGS

    text = SDK_DOC.read_text(encoding="utf-8")
    section = text[text.index("## Connection settings"):]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    for setting in SETTINGS:
        (row,) = [r for r in rows if r.split("|")[1].strip().startswith(f"`{setting.name}`")
                  or f"`{setting.name}`" in r.split("|")[1]]
        assert f"`{setting.env}`" in row.split("|")[2], (setting.name, row)
        assert f"`{setting.flag}`" in row.split("|")[3], (setting.name, row)
