"""Input kinds the SDK took wrongly (an audit, 2026-12-05), through a real server, against local torch:
numpy scalars and 0-d tensors as parameters (``params=``, ``RemoteLoss``, a module's settings), array-likes
given by keyword, lists holding float64 values, one array passed as several inputs in ``evaluate_many``,
sparse and meta tensors, ragged lists, and a name given twice.

Every expected number is local torch's, compared bit for bit.
"""

from __future__ import annotations

import array
import asyncio
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossd.client import AsyncClient, InvalidArgument, build_request
from lossd.client.torch import RemoteLoss, remote_loss

LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, -1.0, 0.0]], np.float32)
LABELS = np.array([0, 2, 1])


def _ce(**kw: Any) -> float:
    return F.cross_entropy(torch.from_numpy(LOGITS), torch.from_numpy(LABELS), **kw).item()


@pytest.mark.parametrize("value", [np.int64(2), np.int32(2), torch.tensor(2)], ids=["np.int64", "np.int32", "tensor"])
def test_a_numpy_scalar_or_0d_tensor_parameter_is_sent_as_its_number(client: Any, value: Any) -> None:
    """``params={"ignore_index": np.int64(2)}`` (and RemoteLoss, and a module's settings) failed with
    protobuf's bare ``ValueError: Unexpected type``."""
    expected = _ce(ignore_index=2)
    assert client.evaluate("cross_entropy", LOGITS, LABELS, params={"ignore_index": value}).value == expected
    loss = RemoteLoss("cross_entropy", client=client, ignore_index=value)
    assert loss(torch.from_numpy(LOGITS), torch.from_numpy(LABELS)).item() == expected
    module = nn.CrossEntropyLoss(label_smoothing=np.float32(0.25))  # type: ignore[arg-type]
    assert client.evaluate(module, LOGITS, LABELS).value == _ce(label_smoothing=float(np.float32(0.25)))
    assert client.evaluate("cross_entropy", LOGITS, LABELS, reduction=np.str_("sum")).value == _ce(reduction="sum")


def test_a_parameter_no_json_can_carry_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match=r"^params\.label_smoothing: cannot send a complex as a parameter"):
        build_request("cross_entropy", LOGITS, LABELS, params={"label_smoothing": np.complex64(0.1)})
    with pytest.raises(TypeError, match=r"^terms\[0\]\.params\.x: cannot send a bytes"):
        build_request([{"loss": "mse_loss", "params": {"x": [1, b"no"]}}], inputs={"input": [1.0], "target": [0.0]})


class _ArrayLike:
    """Something numpy reads (``__array__``) that is neither numpy nor torch: pandas, xarray, JAX arrays."""

    def __init__(self, values: np.ndarray) -> None:
        self._values = values

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._values if dtype is None else self._values.astype(dtype)


@pytest.mark.parametrize("weight", [_ArrayLike(np.array([1.0, 2.0, 0.5], np.float32)),
                                    array.array("f", [1.0, 2.0, 0.5]),
                                    memoryview(np.array([1.0, 2.0, 0.5], np.float32))],
                         ids=["__array__", "array.array", "memoryview"])
def test_array_likes_given_by_keyword_are_inputs(client: Any, weight: Any) -> None:
    """Such a keyword was taken for a parameter, and failed with ``ValueError: Unexpected type``."""
    expected = _ce(weight=torch.tensor([1.0, 2.0, 0.5]))
    assert client.evaluate("cross_entropy", LOGITS, LABELS, weight=weight).value == expected


def test_a_list_holding_float64_values_stays_float64_as_torch_tensor_makes_it(client: Any) -> None:
    """``list(float64_array)`` was sent as float32: value, dtype and gradients unlike local torch's."""
    x = np.array([0.1, 0.7, 0.3], np.float64)
    y = np.array([0.3, 0.2, 0.9], np.float64)
    tx, ty = torch.tensor(list(x), requires_grad=True), torch.tensor(list(y))
    assert tx.dtype == torch.float64
    local = F.mse_loss(tx, ty)
    (gx,) = torch.autograd.grad(local, [tx])
    r = client.evaluate("mse_loss", list(x), list(y))
    assert r.loss.dtype == np.float64 and r.value == local.item()
    np.testing.assert_array_equal(r.grads["y_pred"], gx.numpy())
    assert r.grads["y_pred"].dtype == np.float64
    assert client.evaluate("mse_loss", [0.1, 0.7], [0.3, 0.2]).loss.dtype == np.float32


def test_evaluate_many_sums_the_gradients_of_one_array_passed_twice_as_evaluate_does(client: Any) -> None:
    x = torch.tensor([[0.2, 0.3, 0.5]]).log()
    leaf = x.clone().requires_grad_(True)
    F.kl_div(leaf, leaf, log_target=True, reduction="sum").backward()
    xs = x.numpy()
    item = {"loss": "kl_div", "y_pred": xs, "y_true": xs, "log_target": True, "reduction": "sum"}
    named = {**item, "grad_inputs": ["y_pred"]}
    other = {"loss": "mse_loss", "y_pred": xs, "y_true": np.zeros_like(xs)}
    expected = leaf.grad.numpy()
    single = client.evaluate(**item)
    np.testing.assert_array_equal(single.grads["y_pred"], expected)
    many = client.evaluate_many([other, item, named])
    asynced = asyncio.run(_many_async(client.target, [other, item, named]))
    for outcomes in (many, asynced):
        np.testing.assert_array_equal(outcomes[1].grads["y_pred"], expected)
        np.testing.assert_array_equal(outcomes[1].grads["y_true"], expected)
        assert list(outcomes[2].grads) == ["y_pred"]
        np.testing.assert_array_equal(outcomes[2].grads["y_pred"], expected)
        np.testing.assert_array_equal(outcomes[0].grads["y_pred"], client.evaluate(**other).grads["y_pred"])


async def _many_async(target: str, items: list[dict[str, Any]]) -> list[Any]:
    async with AsyncClient(target) as c:
        return await c.evaluate_many(items)


@pytest.mark.parametrize(("value", "message"), [
    (torch.eye(3).to_sparse(), "inputs.weight: cannot send a sparse_coo tensor; send its .to_dense()"),
    (torch.ones(3, device="meta"), "inputs.weight: cannot send a tensor on the meta device"),
    ([[1.0], [1.0, 2.0]], "inputs.weight: cannot read it as an array"),
], ids=["sparse", "meta", "ragged"])
def test_tensors_without_plain_data_are_refused_naming_the_argument(client: Any, value: Any, message: str) -> None:
    """They escaped as torch's RuntimeError / NotImplementedError, or numpy's ValueError, naming nothing."""
    with pytest.raises((TypeError, ValueError), match=f"^{message}"):
        client.evaluate("cross_entropy", LOGITS, LABELS, weight=value)
    with pytest.raises((TypeError, ValueError), match=rf"^requests\[1\]: {message}"):
        client.evaluate_many([{"loss": "mse_loss", "y_pred": [1.0], "y_true": [0.0]},
                              {"loss": "cross_entropy", "y_pred": LOGITS, "y_true": LABELS, "weight": value}])


def test_a_name_given_twice_is_refused(client: Any) -> None:
    """``y_pred`` and ``inputs["y_pred"]``: the positional one won silently. A parameter sent both as a tensor
    and in params: the tensor won silently on the server. (A name that is both an input and a parameter of
    its loss, adaptive_log_softmax's ``head_bias``, is sent both ways: tests/integration/test_validation_projection.py.)"""
    with pytest.raises(TypeError, match="y_pred was given twice: as an argument and in inputs"):
        client.evaluate("mse_loss", [1.0], [0.0], inputs={"y_pred": [5.0]})
    with pytest.raises(TypeError, match="beta was given twice: as a keyword argument and in params"):
        client.evaluate("smooth_l1_loss", [1.0], [0.0], beta=0.5, params={"beta": 0.9})
    with pytest.raises(TypeError, match="weight was given twice: as a keyword argument and in inputs"):
        client.evaluate("cross_entropy", LOGITS, LABELS, weight=[1.0, 1.0, 1.0], inputs={"weight": [2.0, 1.0, 1.0]})
    with pytest.raises(InvalidArgument, match="inputs.beta: 'beta' was sent twice: as a tensor in inputs and in params"):
        client.evaluate("smooth_l1_loss", [1.0], [0.0], beta=np.float64(0.5), params={"beta": 0.9})
    # a module's setting is overridden by an explicit argument, whichever way either is given: in evaluate
    # and in RemoteLoss (whose own merge sent both, which the server now refuses)
    expected = F.huber_loss(torch.tensor([3.0]), torch.tensor([0.0]), delta=2.0).item()
    assert client.evaluate(nn.HuberLoss(delta=1.0), [3.0], [0.0], delta=np.float64(2.0)).value == expected
    logits, labels = torch.from_numpy(LOGITS), torch.from_numpy(LABELS)
    loss = RemoteLoss(nn.CrossEntropyLoss(label_smoothing=0.1), client=client, label_smoothing=torch.tensor(0.2))
    assert loss(logits, labels).item() == F.cross_entropy(logits, labels, label_smoothing=0.2).item()
    with pytest.raises(TypeError, match="y_pred was given twice"):
        remote_loss("mse_loss", torch.ones(1), torch.zeros(1), client=client, inputs={"y_pred": torch.ones(1)})


def test_a_complex_one_element_tensor_for_a_parameter_is_refused_as_complex(client: Any) -> None:
    with pytest.raises(InvalidArgument, match=r"inputs.label_smoothing: .*\(a complex tensor is not a real number\)"):
        client.evaluate("cross_entropy", LOGITS, LABELS, label_smoothing=np.complex64(0.1))
