"""Assert that the server refuses a request (kind b), or computes it with a warning and refuses it
when strict (kind a), naming the field and the rule, and keeps serving."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lossd.client import InvalidArgument, ServerWarning


def assert_still_serves(client: Any) -> None:
    """A good request right after a bad one still gets the right answer (the seed's check)."""
    r = client.evaluate("cross_entropy", torch.tensor([[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]]), torch.tensor([0, 2]))
    assert round(r.value, 4) == 0.5493


def assert_refused(client: Any, loss: str, field: str, rule: str, **kw: Any) -> str:
    """``client.evaluate(loss, **kw)`` raises INVALID_ARGUMENT mentioning ``field`` and ``rule``."""
    with pytest.raises(InvalidArgument) as err:
        client.evaluate(loss, **kw)
    message = err.value.message
    assert field in message, message
    assert rule in message, message
    assert_still_serves(client)
    return message


def assert_domain_warning(client: Any, loss: str, field: str, rule: str, **kw: Any) -> Any:
    """A rule of kind (a): computed as torch computes it, with a ``ServerWarning`` naming ``field``
    and ``rule``; the same request with ``strict=True`` is INVALID_ARGUMENT naming both."""
    with pytest.warns(ServerWarning) as seen:
        result = client.evaluate(loss, **kw)
    texts = [str(w.message) for w in seen if issubclass(w.category, ServerWarning)]
    assert any(field in t and rule in t for t in texts), texts
    assert result.warnings == texts
    strict = assert_refused(client, loss, field, rule, strict=True, **kw)
    assert "strict" in strict, strict
    return result
