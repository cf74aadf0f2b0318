"""Assert that the server refuses a request, naming the field and the rule, and keeps serving."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lossd.client import InvalidArgument


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
