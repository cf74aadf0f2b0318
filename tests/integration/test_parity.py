"""Every registry entry, through a real server, equals local torch exactly.

Parametrised over the registry: a new loss without a reference and cases in
``tests/support/refs`` fails ``test_every_loss_has_reference_and_cases``.
For each case: float32 and float64, every reduction, value and every gradient,
against both the functional and the ``torch.nn`` class form.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from lossd.client import InvalidArgument, Unimplemented, build_request
from lossd.server.losses import REGISTRY
from support.parity import Case, randn
from support.refs import CASES, REFERENCES

NAMES = [spec.name for spec in REGISTRY]


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_has_reference_and_cases(name: str) -> None:
    assert name in REFERENCES, f"no local-torch reference for {name}: add it in tests/support/refs"
    assert CASES.get(name), f"no test cases for {name}: add them in tests/support/refs"


def _reductions(name: str, case: Case) -> tuple[str | None, ...]:
    if case.reductions is not None:
        return case.reductions
    p = REGISTRY.get(name).param("reduction")
    return tuple(p.choices) if p is not None else (None,)


def _parity_params() -> list[Any]:
    out = []
    for name in NAMES:
        for case in CASES.get(name, []):
            for reduction in _reductions(name, case):
                for dtype in (torch.float32, torch.float64):
                    rid = f"{name}-{case.id}-{reduction or 'fixed'}-{str(dtype)[6:]}"
                    out.append(pytest.param(name, case, reduction, dtype, id=rid))
    return out


def _differentiable(name: str, tensors: dict[str, torch.Tensor]) -> list[str]:
    spec = REGISTRY.get(name)
    return [n for n, t in tensors.items() if spec.input(n).differentiable and t.is_floating_point()]  # type: ignore[union-attr]


def _local(form: Any, tensors: dict[str, torch.Tensor], params: dict[str, Any], diff: list[str],
           grad_output: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    leaves = {n: (t.clone().requires_grad_(True) if n in diff else t.clone()) for n, t in tensors.items()}
    out = form(leaves, params)
    go = torch.ones_like(out) if grad_output is None else grad_output
    grads: dict[str, torch.Tensor] = {}
    if diff and out.requires_grad:
        found = torch.autograd.grad(out, [leaves[n] for n in diff], go, allow_unused=True)
        grads = {n: torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(diff, found)}
    elif diff:
        grads = {n: torch.zeros_like(leaves[n]) for n in diff}
    return out.detach(), grads, go


# Relative tolerance for losses lossd defines (references are independent formulas);
# the absolute tolerance scales with the largest magnitude in the expected tensor.
_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 8e-2}


def _assert_same(actual: torch.Tensor, expected: torch.Tensor, what: str, exact: bool = True) -> None:
    """Bit-identical for torch's own losses; to a dtype tolerance for lossd's formulas."""
    if exact:
        assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{what}: {m}")
        return
    rtol = _TOLERANCE[actual.dtype]
    scale = float(expected.detach().abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=rtol * max(scale, 1e-3),
                               equal_nan=True, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize(("name", "case", "reduction", "dtype"), _parity_params())
def test_parity_with_local_torch(client: Any, name: str, case: Case, reduction: str | None, dtype: torch.dtype) -> None:
    tensors = case.make(dtype)
    params = dict(case.params)
    if reduction is not None:
        params["reduction"] = reduction
    diff = _differentiable(name, tensors)
    ref = REFERENCES[name]

    expected, grads, _ = _local(ref.functional, tensors, params, diff, None)
    grad_output = None
    if expected.dim() > 0:  # non-scalar loss: the grads are a vector-Jacobian product
        grad_output = randn(*expected.shape, dtype=expected.dtype, seed=99)
        expected, grads, _ = _local(ref.functional, tensors, params, diff, grad_output)

    request, _ = build_request(name, inputs=tensors, params=params, grad_output=grad_output)
    result = client.evaluate_request(request, as_torch=True)

    forms = [("functional", expected, grads)]
    if ref.module is not None:
        m_out, m_grads, _ = _local(ref.module, tensors, params, diff, grad_output)
        forms.append(("module", m_out, m_grads))
    for form, out, local_grads in forms:
        _assert_same(result.loss, out, f"{form} loss", ref.exact)
        if out.dim() == 0:
            assert result.value == result.loss.item() or (math.isnan(result.value) and result.loss.isnan())
            if ref.exact:
                assert result.value == out.item()
        else:
            assert result.value is None
        assert set(result.grads) == set(local_grads), f"{form}: grads for {sorted(result.grads)}"
        for n, g in local_grads.items():
            _assert_same(result.grads[n], g, f"{form} grad of {n}", ref.exact)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_matches_torch_or_says_why(client: Any, name: str, dtype: torch.dtype) -> None:
    """Where local torch supports the dtype on CPU, the server matches it; where not, a clear error."""
    case = CASES[name][0]
    tensors = case.make(dtype)
    params = dict(case.params)
    diff = _differentiable(name, tensors)
    request, _ = build_request(name, inputs=tensors, params=params)
    exact = REFERENCES[name].exact
    # lossd's own formulas are checked against the reference evaluated in float64.
    local_tensors = tensors if exact else {n: t.double() if t.is_floating_point() else t for n, t in tensors.items()}
    try:
        expected, grads, _ = _local(REFERENCES[name].functional, local_tensors, params, diff, None)
    except (RuntimeError, NotImplementedError) as local_error:
        with pytest.raises((Unimplemented, InvalidArgument)) as err:
            client.evaluate_request(request)
        assert str(dtype).removeprefix("torch.") in err.value.message or "cannot" in err.value.message, (
            f"unclear message for unsupported {dtype}: {err.value.message} (local torch: {local_error})"
        )
        return
    if expected.dim() > 0:
        pytest.skip("first case is not scalar")  # pragma: no cover
    result = client.evaluate_request(request, as_torch=True)
    assert result.loss.dtype == dtype
    _assert_same(result.loss, expected, "loss", exact)
    for n, g in grads.items():
        _assert_same(result.grads[n], g, f"grad of {n}", exact)
