"""``autograd_grad`` is ``torch.autograd.grad(..., allow_unused=True)``: the same numbers, the same refusals.

Every evaluation's backward goes through it (:func:`lossd.server.evaluation.call_backward` and the
vectorized groups). Where torch's Python checks are known to pass it calls the autograd engine as
that Python does (docs/performance.md: those checks cost more than a small loss's backward); these
tests hold it to torch's own function, bit for bit, and show which calls take which way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from lossd.server.evaluation import _evaluate
from lossd.server.evaluation._evaluate import autograd_grad


def _leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _case_scalar(dtype: torch.dtype) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x, y = _leaves(torch.randn(7, 5, generator=g, dtype=torch.float64).to(dtype),
                   torch.randn(7, 5, generator=g, dtype=torch.float64).to(dtype))
    out = F.smooth_l1_loss(x, y, beta=0.3)
    return out, [x, y], torch.ones_like(out)


def _case_rows() -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """A vectorized group's backward: one loss per row, ones upstream."""
    g = torch.Generator().manual_seed(2)
    x, y = _leaves(torch.randn(8, 100, generator=g), torch.randn(8, 100, generator=g))
    out = F.mse_loss(x, y, reduction="none").mean(dim=1)
    return out, [x, y], torch.ones_like(out)


def _case_upstream() -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """A caller's grad_output, and a leaf the loss does not use (None, as torch gives it)."""
    g = torch.Generator().manual_seed(3)
    x, unused = _leaves(torch.randn(4, 3, generator=g), torch.randn(2, generator=g))
    out = F.l1_loss(x, torch.zeros(4, 3), reduction="none")
    return out, [x, unused], torch.randn(4, 3, generator=g)


def _case_complex() -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    (z,) = _leaves(torch.randn(6, generator=g, dtype=torch.complex64))
    out = z * z.conj() * (1 + 2j)
    return out, [z], torch.randn(6, generator=g, dtype=torch.complex64)


CASES: dict[str, Callable[[], tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]]] = {
    "float32 scalar": lambda: _case_scalar(torch.float32),
    "float64 scalar": lambda: _case_scalar(torch.float64),
    "float16 scalar": lambda: _case_scalar(torch.float16),
    "bfloat16 scalar": lambda: _case_scalar(torch.bfloat16),
    "rows": _case_rows,
    "grad_output and an unused leaf": _case_upstream,
    "complex": _case_complex,
}


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    bits = (a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8)) if a.dim() else (a, b)
    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(*bits))


@pytest.fixture
def torch_grad_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The calls that went through ``torch.autograd.grad`` (still computed by it)."""
    calls: list[Any] = []
    original = torch.autograd.grad

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    return calls


@pytest.mark.parametrize("case", CASES)
def test_the_same_gradients_as_torch_bit_for_bit(case: str, torch_grad_calls: list[Any]) -> None:
    out, leaves, upstream = CASES[case]()
    expected = torch.autograd.grad(out, leaves, upstream, allow_unused=True, retain_graph=True)
    torch_grad_calls.clear()
    found = autograd_grad(out, leaves, upstream)
    assert torch_grad_calls == []  # the engine, called straight
    assert len(found) == len(expected)
    assert all(_same(f, e) for f, e in zip(found, expected)), (found, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_no_upstream_for_a_real_scalar_is_ones_as_torch_makes_them(dtype: torch.dtype,
                                                                    torch_grad_calls: list[Any]) -> None:
    out, leaves, _ = _case_scalar(dtype)
    expected = torch.autograd.grad(out, leaves, allow_unused=True, retain_graph=True)
    torch_grad_calls.clear()
    found = autograd_grad(out, leaves)
    assert torch_grad_calls == []
    assert all(_same(f, e) for f, e in zip(found, expected))


def _refusal(call: Callable[[], Any]) -> str:
    with pytest.raises(RuntimeError) as caught:
        call()
    return str(caught.value)


@pytest.mark.parametrize("wrong", ["shape", "complex upstream for a real output", "real upstream for a complex output"])
def test_what_torch_refuses_goes_to_torch_and_is_refused_as_torch_refuses_it(
    wrong: str, torch_grad_calls: list[Any]
) -> None:
    def inputs() -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        if wrong == "real upstream for a complex output":
            out, leaves, _ = _case_complex()
            return out, leaves, torch.ones(6)
        out, leaves, _ = _case_rows()
        return out, leaves, torch.ones(9) if wrong == "shape" else torch.ones(8, dtype=torch.complex64)

    out, leaves, upstream = inputs()
    expected = _refusal(lambda: torch.autograd.grad(out, leaves, upstream, allow_unused=True))
    torch_grad_calls.clear()
    assert _refusal(lambda: autograd_grad(out, leaves, upstream)) == expected
    assert len(torch_grad_calls) == 1


@pytest.mark.parametrize("output", ["rows", "complex"])
def test_no_upstream_for_other_outputs_is_refused_by_torch(output: str, torch_grad_calls: list[Any]) -> None:
    out, leaves, _ = CASES[output]()
    if output == "complex":
        out = out.sum()  # a scalar, but complex
    expected = _refusal(lambda: torch.autograd.grad(out, leaves, allow_unused=True))
    torch_grad_calls.clear()
    assert _refusal(lambda: autograd_grad(out, leaves)) == expected
    assert len(torch_grad_calls) == 1


def test_no_leaves_are_refused_by_torch(torch_grad_calls: list[Any]) -> None:
    """(The server always has a leaf; the engine alone would answer an internal assertion.)"""
    out, _, upstream = _case_rows()
    expected = _refusal(lambda: torch.autograd.grad(out, [], upstream, allow_unused=True))
    torch_grad_calls.clear()
    assert _refusal(lambda: autograd_grad(out, [], upstream)) == expected
    assert len(torch_grad_calls) == 1


def test_nothing_is_left_behind(torch_grad_calls: list[Any]) -> None:
    """As torch.autograd.grad: the graph is freed, and nothing accumulates in the leaves' ``.grad``."""
    out, leaves, upstream = _case_rows()
    autograd_grad(out, leaves, upstream)
    assert torch_grad_calls == []
    assert [leaf.grad for leaf in leaves] == [None, None]
    assert "second time" in _refusal(lambda: autograd_grad(out, leaves, upstream))


def test_a_leaf_without_requires_grad_is_refused_by_the_engine_as_by_torch() -> None:
    out, (x, _), upstream = _case_rows()
    stray = torch.ones(3)
    expected = _refusal(lambda: torch.autograd.grad(out, [x, stray], upstream, allow_unused=True, retain_graph=True))
    assert _refusal(lambda: autograd_grad(out, [x, stray], upstream)) == expected


def test_a_torch_function_mode_or_subclass_goes_through_torch(torch_grad_calls: list[Any]) -> None:
    class Seen(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            return func(*args, **(kwargs or {}))

    out, leaves, upstream = _case_rows()
    expected = torch.autograd.grad(out, leaves, upstream, allow_unused=True, retain_graph=True)
    torch_grad_calls.clear()
    with Seen():
        found = autograd_grad(out, leaves, upstream)
    assert torch_grad_calls  # (the mode's dispatch calls it again)
    assert all(_same(f, e) for f, e in zip(found, expected))

    class Sub(torch.Tensor):
        pass

    out, leaves, upstream = _case_rows()
    torch_grad_calls.clear()
    autograd_grad(out.as_subclass(Sub), leaves, upstream)
    assert torch_grad_calls


def test_call_backward_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one place: an evaluation's backward is :func:`autograd_grad`'s."""
    seen: list[int] = []
    original = _evaluate.autograd_grad

    def spy(*args: Any) -> Any:
        seen.append(1)
        return original(*args)

    monkeypatch.setattr(_evaluate, "autograd_grad", spy)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    assert [g.tolist() for g in _evaluate.call_backward("demo", (x * x).sum(), [x])] == [[2.0, 4.0]]
    assert seen == [1]
