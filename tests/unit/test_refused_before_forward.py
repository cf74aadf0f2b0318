"""Requests refused from their shapes alone are refused before the loss's forward runs (an audit found a wrong
``grad_output`` and linear_cross_entropy's input/target batch mismatch refused only after a full forward)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lossd.client import build_request
from lossd.server.losses import REGISTRY, LossError
from lossd.server.evaluation import _evaluate
from lossd.server.rpc import handle_evaluate


def _count_forwards(monkeypatch: pytest.MonkeyPatch, name: str,
                    meta: list[tuple[int, ...]] | None = None) -> list[tuple[int, ...]]:
    """The input shapes of every call of ``torch.nn.functional.<name>`` on real tensors (on meta tensors: into
    ``meta``)."""
    real: Callable[..., torch.Tensor] = getattr(F, name)
    calls: list[tuple[int, ...]] = []

    def counted(input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if input.device.type != "meta":
            calls.append(tuple(input.shape))
        elif meta is not None:
            meta.append(tuple(input.shape))
        return real(input, *args, **kwargs)

    monkeypatch.setattr(F, name, counted)
    return calls


@pytest.fixture
def shape_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """grad_output's shape checked before the forward whatever the size (the rule's threshold is 2^20 elements)."""
    monkeypatch.setattr(_evaluate, "SHAPE_FIRST_ELEMENTS", 0)


@pytest.mark.usefixtures("shape_first")
@pytest.mark.parametrize(("reduction", "shape", "loss_shape"), [("none", [4, 3], [5, 3]), ("none", [], [5, 3]),
                                                                ("mean", [5, 3], [])])
def test_a_grad_output_of_the_wrong_shape_is_refused_before_the_forward(
        monkeypatch: pytest.MonkeyPatch, reduction: str, shape: list[int], loss_shape: list[int]) -> None:
    calls = _count_forwards(monkeypatch, "mse_loss")
    x, y = torch.randn(5, 3), torch.randn(3)  # broadcast: the loss's shape is not either input's
    request, _ = build_request("mse_loss", x, y, reduction=reduction, grad_output=torch.ones(shape))
    with pytest.raises(LossError) as err:
        handle_evaluate(REGISTRY, request)
    assert (err.value.field, err.value.message) == ("grad_output", f"has shape {shape}; the loss has shape {loss_shape}")
    assert calls == []


def test_a_small_calls_grad_output_is_checked_after_its_forward_without_a_meta_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The meta run costs more than a small call's whole forward and backward: below SHAPE_FIRST_ELEMENTS a valid
    call never pays it, and a wrong shape is refused after the forward, in the same words."""
    meta: list[tuple[int, ...]] = []
    calls = _count_forwards(monkeypatch, "mse_loss", meta)
    x, y = torch.randn(5, 3), torch.randn(5, 3)
    handle_evaluate(REGISTRY, build_request("mse_loss", x, y, reduction="none", grad_output=torch.ones(5, 3))[0])
    with pytest.raises(LossError) as err:
        handle_evaluate(REGISTRY, build_request("mse_loss", x, y, reduction="none", grad_output=torch.ones(4, 3))[0])
    assert (err.value.field, err.value.message) == ("grad_output", "has shape [4, 3]; the loss has shape [5, 3]")
    assert (calls, meta) == ([(5, 3), (5, 3)], [])
    big = torch.zeros(_evaluate.SHAPE_FIRST_ELEMENTS)  # at the threshold: checked first
    with pytest.raises(LossError) as err:
        handle_evaluate(REGISTRY, build_request("mse_loss", big, big, reduction="none", grad_output=torch.ones(3))[0])
    assert err.value.field == "grad_output" and len(calls) == 2 and meta == [tuple(big.shape)]


def test_a_small_input_whose_loss_builds_much_has_its_grad_output_checked_before_the_forward(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """nt_xent_loss builds a (2N)² similarity matrix from N rows: what it builds counts toward the threshold,
    not only its inputs (4,000 rows of 8, 128 KB, built 64M elements before the refusal: 550 MB, 0.74 s)."""
    calls: list[str] = []
    real = _evaluate.call_loss
    monkeypatch.setattr(_evaluate, "call_loss", lambda spec, *args: calls.append(spec.name) or real(spec, *args))
    x = torch.randn(600, 8)  # 9,600 elements; the matrix (2N)², 1,440,000
    with pytest.raises(LossError) as err:
        handle_evaluate(REGISTRY, build_request("nt_xent_loss", x, x + 1, grad_output=torch.ones(3))[0])
    assert (err.value.field, err.value.message) == ("grad_output", "has shape [3]; the loss has shape []")
    assert calls == []
    handle_evaluate(REGISTRY, build_request("nt_xent_loss", x, x + 1, grad_output=torch.tensor(2.0))[0])
    assert calls == ["nt_xent_loss"]


@pytest.mark.usefixtures("shape_first")
def test_a_grad_output_of_the_right_shape_gives_torchs_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_forwards(monkeypatch, "mse_loss")
    g = torch.Generator().manual_seed(0)
    x, y, v = torch.randn(5, 3, generator=g), torch.randn(3, generator=g), torch.randn(5, 3, generator=g)
    request, _ = build_request("mse_loss", x, y, reduction="none", grad_output=v, grad_inputs=["y_pred"])
    reply = handle_evaluate(REGISTRY, request)
    assert calls == [(5, 3)]  # the forward ran once, on the real tensors
    leaf = x.clone().requires_grad_()
    with pytest.warns(UserWarning, match="target size"):  # torch's broadcast warning, as the reply's
        (expected,) = torch.autograd.grad(F.mse_loss(leaf, y, reduction="none"), leaf, v)
    assert list(reply.warnings) == [f"Using a target size (torch.Size([3])) that is different to the input size "
                                    "(torch.Size([5, 3])). This will likely lead to incorrect results due to "
                                    "broadcasting. Please ensure they have the same size."]  # once: the meta run's is dropped
    from lossd.client._codec import decode

    assert torch.equal(torch.as_tensor(decode(reply.grads["y_pred"]).copy()), expected)


def test_a_loss_whose_shape_needs_values_still_checks_grad_output_after_its_forward() -> None:
    """nll_loss reads its class indices (their range): the meta run cannot tell its shape, the forward does."""
    request, _ = build_request("nll_loss", torch.randn(4, 3).log_softmax(1), torch.tensor([0, 1, 2, 0]),
                               reduction="none", grad_output=torch.ones(3))
    with pytest.raises(LossError) as err:
        handle_evaluate(REGISTRY, request)
    assert (err.value.field, err.value.message) == ("grad_output", "has shape [3]; the loss has shape [4]")


@pytest.mark.parametrize(("weight", "target", "expected"), [((7, 3), (5,), [4]), ((7, 2, 3), (4,), [4, 2]),
                                                            ((7, 3), (), [4])])
def test_linear_cross_entropys_batch_mismatch_is_refused_before_the_projection(
        monkeypatch: pytest.MonkeyPatch, weight: tuple[int, ...], target: tuple[int, ...], expected: list[int]) -> None:
    calls = _count_forwards(monkeypatch, "linear_cross_entropy")
    inputs = {"input": torch.randn(4, 3), "linear_weight": torch.randn(weight),
              "target": torch.zeros(target, dtype=torch.long)}
    request, _ = build_request("linear_cross_entropy", inputs=inputs)
    with pytest.raises(LossError) as err:
        handle_evaluate(REGISTRY, request)
    assert err.value.field == "inputs.target" and f"must have shape {expected}" in err.value.message, err.value
    assert f"got {list(target)}" in err.value.message and calls == []
    inputs["target"] = torch.zeros(expected, dtype=torch.long)  # the batch torch takes: computed as before
    reply = handle_evaluate(REGISTRY, build_request("linear_cross_entropy", inputs=inputs)[0])
    assert len(calls) == 1 and reply.value == F.linear_cross_entropy(
        inputs["input"], inputs["linear_weight"], inputs["target"]).item()
