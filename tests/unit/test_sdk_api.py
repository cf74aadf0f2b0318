"""The SDK's public surface is documented: every public name has a docstring, every class and
function an example, every public method a docstring; Client and AsyncClient match."""

from __future__ import annotations

import inspect

import pytest

import lossd.client
import lossd.client.torch

PUBLIC = [(m, n) for m in (lossd.client, lossd.client.torch) for n in m.__all__]


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=lambda x: getattr(x, "__name__", x))
def test_public_names_have_docstrings_and_examples(module: object, name: str) -> None:
    obj = getattr(module, name)
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return  # constants are documented where they are defined (#: comments) and in docs/sdk.md
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    is_error_subclass = inspect.isclass(obj) and issubclass(obj, lossd.client.LossdError) and (
        obj is not lossd.client.LossdError)
    if not is_error_subclass:  # one example on LossdError serves its subclasses
        assert ">>>" in doc, f"{name}'s docstring has no example"
    if inspect.isclass(obj):
        for attr, member in vars(obj).items():
            if not attr.startswith("_") and callable(member):
                assert inspect.getdoc(member), f"{name}.{attr} has no docstring"


def test_public_callables_are_annotated() -> None:
    for module, name in PUBLIC:
        obj = getattr(module, name)
        functions = [obj] if inspect.isfunction(obj) else [
            m for a, m in vars(obj).items() if inspect.isfunction(m) and not a.startswith("_")
        ] if inspect.isclass(obj) else []
        for fn in functions:
            sig = inspect.signature(fn)
            assert sig.return_annotation is not inspect.Signature.empty, f"{name}.{fn.__name__}: no return type"
            for p in sig.parameters.values():
                if p.name not in ("self", "cls"):
                    assert p.annotation is not inspect.Parameter.empty, f"{name}.{fn.__name__}({p.name}): no type"
