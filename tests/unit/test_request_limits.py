"""Request limits (lossd._wire.check_tensors) and the non-finite rule (check_finite), in this process.

Each limit is checked from the shapes in the parsed message, in Python ints, before any tensor is
built, and its refusal names the field, the limit, its value and the ``lossd serve`` flag. The same
rules against a real server: tests/integration/test_request_limits.py and test_non_finite.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from lossd._wire import (
    DEFAULT_MAX_REQUEST_ELEMENTS,
    DEFAULT_MAX_TENSORS,
    MAX_DIMS,
    MAX_LOSS_WORK,
    TensorLimits,
    FieldError,
    check_tensor,
    check_tensors,
)
from lossd.server.rpc import _tensors
from lossd.server._config import ServerConfig, build_parser
from lossd.server.rpc import check_finite, decode_tensor, decode_tensors
from lossd.v1 import lossd_pb2

INT64_MAX = 2**63 - 1


def T(shape: list[int], dtype: str = "float32", **kw: object) -> lossd_pb2.Tensor:  # noqa: N802
    """A tensor message with a matching zero payload unless ``raw``/``values`` is given."""
    if "raw" not in kw and "values" not in kw and math.prod(shape) < 10**6:
        kw["raw"] = b"\0" * (math.prod(shape) * (8 if dtype in ("float64", "int64") else 4))
    return lossd_pb2.Tensor(dtype=dtype, shape=shape, **kw)  # type: ignore[arg-type]


def refusal(tensors: list[tuple[str, lossd_pb2.Tensor]], **limits: int) -> FieldError:
    with pytest.raises(FieldError) as info:
        check_tensors([(f, m, None) for f, m in tensors], TensorLimits(**limits))
    return info.value


@pytest.mark.parametrize("shape", [
    [2**40, 2**40],                      # 2**80 elements: would overflow int64
    [INT64_MAX, INT64_MAX],              # each dim a valid int64, the product not
    [3037000500, 3037000500],            # just past sqrt(2**63): the product overflows int64 by a little
    [2**21] * 3,                         # 2**63 exactly
])
def test_shapes_whose_product_overflows_int64_are_refused_as_over_the_limit(shape: list[int]) -> None:
    e = refusal([("inputs.input", T(shape))])
    assert (e.code, e.field) == ("RESOURCE_EXHAUSTED", "inputs.input.shape")
    assert str(math.prod(shape)) in e.message and "--max-tensor-elements" in e.message


@pytest.mark.parametrize("shape", [[0, 2**62, 2**62], [0, INT64_MAX, 2]])
def test_an_empty_tensor_with_huge_dims_is_refused_before_torch_sees_it(shape: list[int]) -> None:
    # torch.empty(shape) raises "Stride calculation overflowed" for these: that would be INTERNAL.
    with pytest.raises(RuntimeError):
        torch.empty(shape)
    e = refusal([("inputs.input", T(shape))])
    assert (e.code, e.field) == ("RESOURCE_EXHAUSTED", "inputs.input.shape") and "is empty" in e.message
    assert decode_tensor(T([0, 3]), "x")[0].shape == (0, 3)  # an ordinary empty tensor is fine


def test_negative_dims_and_too_many_dims_are_malformed() -> None:
    e = refusal([("inputs.input", T([2, -3], raw=b""))])
    assert (e.code, e.field) == ("INVALID_ARGUMENT", "inputs.input.shape") and "dimension 1 is -3" in e.message
    e = refusal([("inputs.input", T([1] * (MAX_DIMS + 1)))])
    assert (e.code, e.field) == ("INVALID_ARGUMENT", "inputs.input.shape") and f"at most {MAX_DIMS}" in e.message
    assert check_tensor(T([1] * MAX_DIMS), "x").numel == 1


@pytest.mark.parametrize("dtype, n_bytes", [("float32", 7), ("float64", 4), ("int64", 16), ("bool", 2)])
def test_raw_length_must_equal_shape_times_itemsize(dtype: str, n_bytes: int) -> None:
    e = refusal([("parameters.w", T([3], dtype, raw=b"\1" * n_bytes))])
    assert (e.code, e.field) == ("INVALID_ARGUMENT", "parameters.w.raw") and f"has {n_bytes} bytes" in e.message


def test_per_tensor_limit_names_the_limit_its_value_and_the_flag() -> None:
    e = refusal([("inputs.input", T([10])), ("grad_output", T([11]))], max_tensor_elements=10)
    assert (e.code, e.field) == ("RESOURCE_EXHAUSTED", "grad_output.shape")
    assert e.message == ("shape [11] has 11 elements; the server's limit is 10 elements per tensor "
                         "(--max-tensor-elements, env LOSSD_MAX_TENSOR_ELEMENTS)")


def test_per_request_limit_counts_every_tensor_and_names_the_one_that_crosses_it() -> None:
    tensors = [("inputs.input", T([4, 10])), ("inputs.target", T([40])), ("parameters.fc.weight", T([30]))]
    assert [x.numel for x in check_tensors([(f, m, None) for f, m in tensors], TensorLimits(max_request_elements=110))]
    e = refusal(tensors, max_request_elements=109)
    assert (e.code, e.field) == ("RESOURCE_EXHAUSTED", "parameters.fc.weight")
    assert "110 elements in all" in e.message and "limit is 109 elements per request" in e.message
    assert "--max-request-elements, env LOSSD_MAX_REQUEST_ELEMENTS" in e.message


def test_tensor_count_limit_lists_where_the_tensors_are() -> None:
    tensors = [("inputs.input", T([1])), ("inputs.target", T([1]))] + [(f"parameters.p{i}", T([1])) for i in range(3)]
    assert len(check_tensors([(f, m, None) for f, m in tensors], TensorLimits(max_tensors=5))) == 5
    e = refusal(tensors, max_tensors=4)
    assert (e.code, e.field) == ("RESOURCE_EXHAUSTED", "parameters.p2")
    assert "carries 5 tensors (2 in inputs, 3 in parameters)" in e.message
    assert "limit is 4 tensors per request (--max-tensors, env LOSSD_MAX_TENSORS)" in e.message


def test_objective_terms_are_counted() -> None:
    assert check_tensors([], TensorLimits(max_terms=3), terms=3) == []
    with pytest.raises(FieldError) as info:
        check_tensors([], TensorLimits(max_terms=3), terms=4)
    e = info.value
    assert (e.code, e.field) == ("RESOURCE_EXHAUSTED", "terms")
    assert e.message == ("the objective has 4 terms; the server's limit is 3 terms per request "
                         "(--max-terms, env LOSSD_MAX_TERMS)")


def test_many_terms_cost_linear_time() -> None:
    """Naming duplicate terms (mse_loss, mse_loss#2, ...) was cubic in their number; it is linear."""
    import time

    from lossd.server.evaluation._objective import Term, _term_names
    from lossd.server.losses import REGISTRY

    spec = REGISTRY.get("mse")
    start = time.perf_counter()
    names = _term_names([Term("mse")] * 20_000, [spec] * 20_000)
    assert names[:3] == ["mse_loss", "mse_loss#2", "mse_loss#3"] and len(set(names)) == 20_000
    assert time.perf_counter() - start < 5  # ~0.02 s; the cubic version would take hours
    named = [Term("mse", name="mse_loss#2"), Term("mse"), Term("mse")]
    assert _term_names(named, [spec] * 3) == ["mse_loss#2", "mse_loss", "mse_loss#3"]


def test_the_count_is_checked_before_any_tensor_header() -> None:
    # Past the count, even a malformed tensor is not looked at: the cheap rule answers first.
    e = refusal([("inputs.a", T([1])), ("inputs.b", T([-1], raw=b""))], max_tensors=1)
    assert e.code == "RESOURCE_EXHAUSTED"


def test_a_refused_request_builds_no_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = _tensors._decode
    monkeypatch.setattr(_tensors, "_decode", lambda msg, field, layout: built.append(field) or real(msg, field, layout))
    items = [("inputs.input", T([5]), None), ("inputs.target", T([5]), None)]
    with pytest.raises(FieldError):
        decode_tensors(items, TensorLimits(max_request_elements=9))
    assert built == []  # the first tensor was fine on its own, and still was not decoded
    assert len(decode_tensors(items, TensorLimits(max_request_elements=10))) == 2 and built == [
        "inputs.input", "inputs.target"]


def test_integer_values_at_the_int64_edge() -> None:
    ok, _ = decode_tensor(T([2], "int64", values=[-(2.0**63), 2.0**62]), "x")
    assert ok.tolist() == [-(2**63), 2**62]
    with pytest.raises(FieldError, match=r"\[-9223372036854775808, 9223372036854775807\]"):
        decode_tensor(T([1], "int64", values=[2.0**63]), "x")  # would wrap to -2**63 in a cast


def test_defaults_and_settings() -> None:
    limits = ServerConfig().tensor_limits()
    assert (limits.max_request_elements, limits.max_tensors) == (DEFAULT_MAX_REQUEST_ELEMENTS, DEFAULT_MAX_TENSORS)
    assert limits.max_request_elements >= 2 * limits.max_tensor_elements  # two largest tensors fit one request
    assert limits.max_loss_work == MAX_LOSS_WORK == 2**26
    args = build_parser().parse_args(["--max-request-elements", "123", "--max-tensors", "7", "--max-terms", "2",
                                      "--max-loss-work", "9"])
    assert (args.max_request_elements, args.max_tensors, args.max_terms, args.max_loss_work) == (123, 7, 2, 9)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOSSD_MAX_REQUEST_ELEMENTS", "1000")
    monkeypatch.setenv("LOSSD_MAX_TENSORS", "9")
    monkeypatch.setenv("LOSSD_MAX_TENSOR_ELEMENTS", "500")
    monkeypatch.setenv("LOSSD_MAX_TERMS", "5")
    monkeypatch.setenv("LOSSD_MAX_LOSS_WORK", "77")
    assert ServerConfig().tensor_limits() == TensorLimits(500, 1000, 9, 5, 77)
    training = ServerConfig().training().limits
    assert training.tensors == TensorLimits(500, 1000, 9, max_loss_work=77)  # a job has no objective terms
    assert training.max_loss_work == 77  # the job's loss on a batch (TrainJob submission)


# -- the non-finite rule --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bad, found", [(math.nan, "NaN"), (math.inf, "Inf"), (-math.inf, "-Inf")])
def test_check_finite_names_what_and_the_first_flat_index(dtype: torch.dtype, bad: float, found: str) -> None:
    t = torch.zeros(3, 4, dtype=dtype)
    t[1, 2] = bad
    t[2, 3] = math.nan
    with pytest.raises(FieldError) as info:
        check_finite(t, "inputs.input", "HOW")
    assert info.value.field == "inputs.input" and info.value.code == "INVALID_ARGUMENT"
    assert info.value.message.startswith(f"contains {found} at flat index 6 ") and info.value.message.endswith("HOW")


def test_check_finite_lets_finite_values_through_even_when_their_sum_overflows() -> None:
    big = torch.full((8,), 3e38)  # sums to inf in float32: the exact scan then finds nothing
    assert not torch.isfinite(big.sum())
    check_finite(big, "x", "")
    check_finite(torch.full((4,), 60000.0, dtype=torch.float16), "x", "")
    check_finite(torch.tensor([1, 2], dtype=torch.int64), "x", "")  # integers are always finite
    check_finite(torch.empty(0), "x", "")


def test_check_finite_on_a_non_contiguous_tensor() -> None:
    t = torch.zeros(4, 4)
    t[3, 1] = math.inf
    with pytest.raises(FieldError, match="Inf at flat index 7 "):
        check_finite(t.t(), "x", "")  # t.t()[1, 3] is flat index 7 of the transposed view
