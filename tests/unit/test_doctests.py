"""Every docstring example in the lossd package runs (they are the API's first documentation)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest


SKIP = {"lossd.server.__main__", "lossd.client.__main__"}
PACKAGES = [
    "lossd", "lossd.client", "lossd.server", "lossd.server.evaluation", "lossd.server.interceptors", "lossd.server.losses",
    "lossd.server.rpc", "lossd.server.training",
]


def _modules() -> list[str]:
    # The packages live in different folders (package-dir mapping), so walk each one.
    names = set(PACKAGES)
    for pkg in PACKAGES:
        path = importlib.import_module(pkg).__path__
        names.update(m.name for m in pkgutil.iter_modules(path, f"{pkg}."))
    return sorted(n for n in names if n not in SKIP and not n.endswith(("_pb2", "_pb2_grpc")) and n not in ("lossd.v1",))


MODULES = _modules()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
