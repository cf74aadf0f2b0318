"""What torch computes, lossd computes: every loss's first case in every wire dtype, through a server.

For each torch loss (exact references) and each dtype of ``SWEEP_DTYPES`` (floating, complex,
integer, bool): where local torch computes the loss, the server returns the same value, dtype and
gradients bit for bit, and every warning torch raised; where local torch refuses, so does the
server (a clear error, never INTERNAL). lossd's own losses (tolerance references) are swept over
the floating dtypes in ``test_parity.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lossd.client import InvalidArgument, ServerWarning, Unimplemented, build_request
from lossd.server.losses import REGISTRY
from support.parity import SWEEP_DTYPES, cast_case, local_outcome
from support.refs import CASES, REFERENCES

TORCH_LOSSES = [s.name for s in REGISTRY if s.name in REFERENCES and REFERENCES[s.name].exact]


@pytest.mark.parametrize("dtype", SWEEP_DTYPES, ids=[str(d).removeprefix("torch.") for d in SWEEP_DTYPES])
@pytest.mark.parametrize("name", TORCH_LOSSES)
def test_every_dtype_torch_computes(client: Any, name: str, dtype: torch.dtype) -> None:
    case = CASES[name][0]
    tensors = cast_case(case.make(torch.float64), dtype)
    spec = REGISTRY.get(name)
    diff = [n for n, t in tensors.items() if spec.input(n).differentiable  # type: ignore[union-attr]
            and (t.is_floating_point() or t.is_complex())]
    request, _ = build_request(name, inputs=tensors, params=dict(case.params), allow_non_finite=True)
    try:
        expected, grads, local_warnings = local_outcome(REFERENCES[name].functional, tensors, case.params, diff)
    except Exception as local_error:  # noqa: BLE001 - whatever torch raises, the server must refuse
        with pytest.raises((InvalidArgument, Unimplemented)):
            client.evaluate_request(request)
        return
    if expected.dim() > 0:
        request.grad_output.CopyFrom(build_request(name, grad_output=torch.ones_like(expected))[0].grad_output)
    with pytest.warns(ServerWarning) if local_warnings else _no_warning_check():
        result = client.evaluate_request(request, as_torch=True)
    assert result.loss.dtype == expected.dtype
    torch.testing.assert_close(result.loss, expected, rtol=0, atol=0, equal_nan=True)
    assert set(result.grads) == set(grads)
    for n, g in grads.items():
        assert result.grads[n].dtype == g.dtype, n
        torch.testing.assert_close(result.grads[n], g, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{n}: {m}")
    assert set(local_warnings) <= set(result.warnings), (local_warnings, result.warnings)


class _no_warning_check:
    """A stand-in for ``pytest.warns`` when torch raised none (lossd may still add a domain warning)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
