"""What torch accepts, lossd accepts, with torch's numbers bit for bit; what torch refuses, lossd refuses.

An audit found calls that differ: null ``size_average``/``reduce`` that replaced ``reduction``, the
legacy args accepted by losses whose torch functional has none, cross_entropy refusing a negative
ignore_index with probability targets, ctc_loss refusing 0-d lengths with a batch of one, and two
SDK codec paths: bfloat16 decoded to torch through a float32 conversion (a NaN's bits changed) and
64-bit integers rounded to float64 by ``encoding="values"``. Every expectation here is torch's own
result, compared as integer views (NaN bits, -0.0 and all).
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossd._wire import FieldError
from lossd.client import build_request, decode, encode
from lossd.server.evaluation import evaluate
from lossd.server.losses import REGISTRY
from lossd.server.rpc import decode_tensor, encode_tensor, handle_evaluate, struct_to_dict

f64 = torch.float64


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _x(*shape: int, seed: int = 0, dtype: torch.dtype = f64) -> torch.Tensor:
    return torch.randn(shape, generator=_g(seed), dtype=f64).to(dtype)


def bits(t: torch.Tensor) -> torch.Tensor:
    """``t``'s elements as integers of the same width: equal bits, equal views."""
    t = t.detach().contiguous()
    if t.is_complex():
        t = torch.view_as_real(t).contiguous()
    if t.dtype == torch.bool:
        return t.to(torch.int8)
    return t.view({8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[t.element_size()])


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.equal(bits(a), bits(b)), (a, b)


def _torch(fn: Any, tensors: dict[str, torch.Tensor], kwargs: dict[str, Any], diff: tuple[str, ...],
           grad_output: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
    """torch's loss, its gradients for ``diff`` and the warnings it raised."""
    leaves = {n: tensors[n].clone().requires_grad_(True) for n in diff}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = fn(**{**tensors, **leaves}, **kwargs)
    go = torch.ones_like(out) if grad_output is None else grad_output
    found = torch.autograd.grad(out, list(leaves.values()), go, allow_unused=True)
    grads = {n: torch.zeros_like(t) if g is None else g for (n, t), g in zip(leaves.items(), found)}
    return out.detach(), grads, [str(w.message) for w in seen]


# ---------------------------------------------------------------------- 1. null size_average / reduce

ABSENT = "absent"
LEGACY = [None, True, False, ABSENT]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("size_average", LEGACY)
@pytest.mark.parametrize("reduce", LEGACY)
def test_legacy_reduction_args_follow_torch(reduction: str, size_average: Any, reduce: Any) -> None:
    """torch applies size_average / reduce only when one of them is not None; null ones leave reduction."""
    x, y = _x(4, 3), _x(4, 3, seed=1)
    kwargs: dict[str, Any] = {"reduction": reduction}
    if size_average != ABSENT:
        kwargs["size_average"] = size_average
    if reduce != ABSENT:
        kwargs["reduce"] = reduce
    expected, grads, torch_warnings = _torch(F.mse_loss, {"input": x, "target": y}, kwargs, ("input",))
    go = torch.ones_like(expected) if expected.dim() else None
    r = evaluate(REGISTRY, "mse_loss", {"input": x, "target": y}, kwargs, grad_output=go)
    same(r.loss, expected)
    same(r.grads["input"], grads["input"])
    assert r.warnings == torch_warnings  # torch's deprecation warning exactly when torch gives it


LEGACY_LOSSES = [s.name for s in REGISTRY if s.legacy_reduction]


@pytest.mark.parametrize("name", LEGACY_LOSSES)
@pytest.mark.parametrize("legacy", [{"size_average": None}, {"reduce": None}, {"size_average": None, "reduce": None}])
def test_null_legacy_args_keep_reduction_in_every_loss_that_takes_them(name: str, legacy: dict[str, Any]) -> None:
    spec = REGISTRY.get(name)
    tensors, params = spec.example_inputs(f64)
    kwargs = {**params, **legacy, "reduction": "sum"}
    diff = tuple(n for n, t in tensors.items() if spec.input(n).differentiable and t.is_floating_point())
    expected, grads, _ = _torch(getattr(F, name), tensors, kwargs, diff)
    r = evaluate(REGISTRY, name, tensors, kwargs)
    same(r.loss, expected)
    for n in diff:
        same(r.grads[n], grads[n])


# ------------------------------------------------------- 4. legacy args only where torch's functional has them


def _functional(source: str) -> Any:
    prefix = "torch.nn.functional."
    return getattr(F, source.removeprefix(prefix), None) if source.startswith(prefix) else None


def _arguments(fn: Any) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except ValueError:  # a C++ builtin (cosine_similarity, pairwise_distance): none of the legacy args
        return set()


def test_legacy_reduction_flag_follows_torchs_signatures() -> None:
    """The one declared place (LossSpec.legacy_reduction) says what this torch's functionals take."""
    for spec in REGISTRY:
        fn = _functional(spec.source)
        takes = fn is not None and {"size_average", "reduce"} <= _arguments(fn)
        assert spec.legacy_reduction == takes, spec.name


REFUSING = [s.name for s in REGISTRY if not s.legacy_reduction]


@pytest.mark.parametrize("name", REFUSING)
@pytest.mark.parametrize(("key", "value"), [("size_average", False), ("size_average", None), ("reduce", True),
                                            ("reduce", None)])
def test_legacy_args_refused_where_torch_has_none(name: str, key: str, value: Any) -> None:
    spec = REGISTRY.get(name)
    tensors, params = spec.example_inputs(f64)
    fn = _functional(spec.source)
    if fn is not None:  # torch's functional refuses the argument, null included
        with pytest.raises(TypeError, match=key):
            fn(**tensors, **params, **{key: value})
    with pytest.raises(FieldError) as e:
        evaluate(REGISTRY, name, tensors, {**params, key: value})
    assert e.value.field == f"params.{key}"
    assert f"{name} does not take {key}" in e.value.message and "use reduction" in e.value.message


def test_huber_loss_size_average_refused_as_torch_refuses_it() -> None:
    x, y = _x(3), _x(3, seed=1)
    with pytest.raises(TypeError, match="size_average"):
        F.huber_loss(x, y, size_average=False)  # type: ignore[call-arg]
    with pytest.raises(FieldError, match=r"params\.size_average: huber_loss does not take size_average "
                                         r"\(torch\.nn\.functional\.huber_loss has no such argument\)"):
        evaluate(REGISTRY, "huber_loss", {"input": x, "target": y}, {"size_average": False})


# ------------------------------------------------- 3. cross_entropy: ignore_index with probability targets


@pytest.mark.parametrize("ignore_index", [-100, -1, -7, -(2**62), 0, 1, 2, 5])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_probability_targets_take_negative_ignore_index(
    ignore_index: int, label_smoothing: float, weighted: bool
) -> None:
    x, p = _x(4, 3), torch.softmax(_x(4, 3, seed=1), 1)
    tensors = {"input": x, "target": p}
    if weighted:
        tensors["weight"] = torch.tensor([0.5, 1.0, 2.0], dtype=f64)
    kwargs = {"ignore_index": ignore_index, "label_smoothing": label_smoothing}
    if ignore_index >= 0:  # torch: "ignore_index is not supported for floating point target"
        with pytest.raises(RuntimeError, match="ignore_index"):
            F.cross_entropy(**tensors, **kwargs)
        with pytest.raises(FieldError, match=r"params\.ignore_index: .*>= 0"):
            evaluate(REGISTRY, "cross_entropy", tensors, kwargs)
        return
    expected, grads, _ = _torch(F.cross_entropy, tensors, kwargs, ("input", "target"))
    r = evaluate(REGISTRY, "cross_entropy", tensors, kwargs)
    same(r.loss, expected)
    same(r.grads["input"], grads["input"])
    same(r.grads["target"], grads["target"])


# --------------------------------------------------------- 5. ctc_loss: 0-d lengths with a batch of one


def _ctc(n: int, dtype: torch.dtype = f64) -> tuple[torch.Tensor, torch.Tensor]:
    log_probs = _x(6, n, 5, seed=3).log_softmax(-1).to(dtype)
    targets = torch.tensor([[1, 2, 2, 4], [3, 1, 4, 4]])[:n]
    return log_probs, targets


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, f64])
@pytest.mark.parametrize(("input_lengths", "target_lengths"), [
    (torch.tensor(6), torch.tensor(3)), (torch.tensor(5), torch.tensor([4])), (torch.tensor([6]), torch.tensor(2)),
])
@pytest.mark.parametrize("concatenated", [False, True])
def test_ctc_batch_of_one_takes_0d_lengths(reduction: str, dtype: torch.dtype, input_lengths: torch.Tensor,
                                           target_lengths: torch.Tensor, concatenated: bool) -> None:
    log_probs, targets = _ctc(1, dtype)
    if concatenated:
        targets = targets[0, : int(target_lengths.reshape(-1)[0])]
    tensors = {"log_probs": log_probs, "targets": targets, "input_lengths": input_lengths,
               "target_lengths": target_lengths}
    kwargs = {"reduction": reduction}
    expected, grads, _ = _torch(F.ctc_loss, tensors, kwargs, ("log_probs",))
    go = torch.ones_like(expected) if expected.dim() else None
    r = evaluate(REGISTRY, "ctc_loss", tensors, kwargs, grad_output=go)
    same(r.loss, expected)
    same(r.grads["log_probs"], grads["log_probs"])


@pytest.mark.parametrize(("input_lengths", "target_lengths"), [
    (torch.tensor([[6], [5]]), torch.tensor([[4], [3]])), (torch.tensor([[6, 5]]), torch.tensor([4, 3])),
    (torch.tensor([6, 5]).reshape(2, 1, 1), torch.tensor([[4, 3]])),
])
def test_ctc_lengths_of_any_shape_holding_n_elements_as_torch_reads_them(input_lengths: torch.Tensor,
                                                                          target_lengths: torch.Tensor) -> None:
    """torch reads the lengths flat: (N, 1), (1, N), (N, 1, 1) all work there, and were refused here."""
    log_probs, targets = _ctc(2)
    tensors = {"log_probs": log_probs, "targets": targets, "input_lengths": input_lengths,
               "target_lengths": target_lengths}
    expected, grads, _ = _torch(F.ctc_loss, tensors, {}, ("log_probs",))
    r = evaluate(REGISTRY, "ctc_loss", tensors, {})
    same(r.loss, expected)
    same(r.grads["log_probs"], grads["log_probs"])


def test_ctc_0d_lengths_refused_for_a_larger_batch_as_torch_refuses_them() -> None:
    log_probs, targets = _ctc(2)
    tensors = {"log_probs": log_probs, "targets": targets, "input_lengths": torch.tensor(6),
               "target_lengths": torch.tensor([3, 2])}
    with pytest.raises(RuntimeError, match="input_lengths must be of size batch_size"):
        F.ctc_loss(**tensors)
    with pytest.raises(FieldError, match=r"inputs\.input_lengths: must have shape \(N\) = \(2\)"):
        evaluate(REGISTRY, "ctc_loss", tensors, {})


# ------------------------------------------------------ 2. the SDK's decode keeps every bit of every dtype


def _all_16_bit(dtype: torch.dtype) -> torch.Tensor:
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)


def _signaling(t: torch.Tensor) -> torch.Tensor:
    """NaNs whose quiet bit is clear: a conversion to float64 (``values``) quiets them, in torch too."""
    quiet = {torch.bfloat16: 0x40, torch.float16: 0x200, torch.float32: 0x400000, f64: 0x8000000000000}[t.dtype]
    return torch.isnan(t) & ((bits(t) & quiet) == 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_decode_keeps_every_16_bit_pattern(dtype: torch.dtype) -> None:
    t = _all_16_bit(dtype)  # every NaN (sign, payload), infinity, subnormal and -0.0
    raw = encode(t)
    same(decode(raw, as_torch=True), t)
    as_np = decode(raw)  # numpy: float16 as it is, bfloat16 as the float32 of the same bits
    want = t.to(torch.float32) if dtype == torch.bfloat16 else t
    assert np.array_equal(as_np.view(np.int32 if dtype == torch.bfloat16 else np.int16), bits(want).numpy())
    kept = t[~_signaling(t)]  # values: float64 numbers, quiet NaNs keep their sign and payload
    for msg in (encode(kept, "values"), encode_tensor(kept, "values")):
        same(decode(msg, as_torch=True), kept)


def test_decode_of_a_bfloat16_nan_keeps_its_bits() -> None:
    t = torch.tensor([0x7FC0, 0xFFC0 - 2**16, 0x7FFF, 0x3FC0], dtype=torch.int16).view(torch.bfloat16)
    same(decode(encode(t), as_torch=True), t)
    same(decode(encode_tensor(t, "raw"), as_torch=True), t)
    same(decode(encode(t, "values"), as_torch=True), t)


@pytest.mark.parametrize("dtype", [torch.float32, f64, torch.complex64, torch.complex128])
def test_decode_keeps_float_bits(dtype: torch.dtype) -> None:
    n = 4096
    width = torch.int32 if dtype in (torch.float32, torch.complex64) else torch.int64
    raw_bits = torch.randint(torch.iinfo(width).min, torch.iinfo(width).max, (2 * n,), generator=_g(5), dtype=width)
    real = raw_bits.view(torch.float32 if width == torch.int32 else f64)
    t = torch.view_as_complex(real.reshape(n, 2)) if dtype.is_complex else real[:n]
    t = torch.cat([t, torch.tensor([math.nan, -math.nan, math.inf, -math.inf, -0.0], dtype=real.dtype).to(dtype)])
    same(decode(encode(t), as_torch=True), t)
    assert np.array_equal(bits(torch.from_numpy(np.array(decode(encode(t))))).numpy(), bits(t).numpy())
    quiet = ~_signaling(torch.view_as_real(t) if dtype.is_complex else t)  # values quiets signaling NaNs
    kept = t[quiet.all(-1)] if dtype.is_complex else t[quiet]
    for msg in (encode(kept, "values"), encode_tensor(kept, "values")):
        same(decode(msg, as_torch=True), kept)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool])
@pytest.mark.parametrize("encoding", ["raw", "values"])
def test_decode_keeps_integers(dtype: torch.dtype, encoding: str) -> None:
    if dtype == torch.bool:
        t = torch.tensor([True, False, True])
    else:
        info = torch.iinfo(dtype)
        top = min(info.max, 2**53) if encoding == "values" else info.max
        low = max(info.min, -(2**53)) if encoding == "values" else info.min
        t = torch.tensor([low, low + 1, -1 if low < 0 else 0, 0, 1, top - 1, top], dtype=dtype)
    same(decode(encode(t, encoding), as_torch=True), t)
    assert np.array_equal(decode(encode(t, encoding)), t.numpy())


def test_bfloat16_nan_from_a_server_reply_keeps_its_bits() -> None:
    """End to end in process: mse of a bfloat16 NaN, torch's loss and gradient bits decoded as they are."""
    x = torch.tensor([math.nan, 1.0], dtype=torch.bfloat16)
    y = torch.zeros(2, dtype=torch.bfloat16)
    go = torch.ones(2, dtype=torch.bfloat16)
    expected, grads, _ = _torch(F.mse_loss, {"input": x, "target": y}, {"reduction": "none"}, ("input",), go)
    r = evaluate(REGISTRY, "mse_loss", {"input": x, "target": y}, {"reduction": "none"}, grad_output=go)
    for encoding in ("raw", "values"):
        same(decode(encode_tensor(r.loss, encoding), as_torch=True), expected)
        same(decode(encode_tensor(r.grads["input"], encoding), as_torch=True), grads["input"])


# ------------------------------------------------- 6. encoding="values" refuses integers a float64 rounds


BIG = [2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63) + 1, 2**62 + 3]
EXACT = [2**53, -(2**53), 2**60, -(2**63), 2**62 + 2**10, 0, -1]


def _forms(value: int) -> list[Any]:
    forms: list[Any] = [torch.tensor([0, value]), np.array([0, value], np.int64), [0, value], np.int64(value)]
    if value >= 0:
        forms.append(np.array([value], np.uint64))
    return forms


@pytest.mark.parametrize("value", BIG)
def test_values_encoding_refuses_integers_a_float64_rounds(value: int) -> None:
    assert int(float(value)) != value  # a float64 number would round it
    for form in _forms(value):
        with pytest.raises(ValueError, match=rf"inputs\.target: int64 value {value} .*use encoding='raw'"):
            encode(form, "values", "inputs.target")
        with pytest.raises(ValueError, match=rf"inputs\.y_true: int64 value {value}"):
            build_request("l1_loss", _x(2), form, encoding="values")
        raw = decode(encode(form), as_torch=True)  # raw carries it exactly
        assert int(raw.reshape(-1)[-1]) == value


@pytest.mark.parametrize("value", EXACT)
def test_values_encoding_keeps_integers_a_float64_holds(value: int) -> None:
    assert int(float(value)) == value
    for form in _forms(value):
        msg = encode(form, "values")
        server, _ = decode_tensor(msg, "inputs.target")
        assert int(server.reshape(-1)[-1]) == value
        assert int(decode(msg, as_torch=True).reshape(-1)[-1]) == value


def test_values_refusal_names_the_first_inexact_element() -> None:
    t = torch.tensor([[0, 2**60], [2**53 + 1, 2**53 + 3]])
    with pytest.raises(ValueError, match=r"grad_output: int64 value 9007199254740993 \(flat index 2\)"):
        encode(t, "values", "grad_output")


# ------------------------------------------- 7. p = +-inf (the max / min norm), where torch takes it


def _request(loss: str, tensors: dict[str, torch.Tensor], params: dict[str, Any], **options: Any) -> Any:
    request, _ = build_request(loss, inputs=tensors, params=params, **options)
    return request


@pytest.mark.parametrize("p", [math.inf, -math.inf])
@pytest.mark.parametrize(("loss", "fn", "names"), [
    ("pairwise_distance", F.pairwise_distance, ("x1", "x2")),
    ("triplet_margin_loss", F.triplet_margin_loss, ("anchor", "positive", "negative")),
])
def test_infinite_norm_degree_as_torch(p: float, loss: str, fn: Any, names: tuple[str, ...]) -> None:
    tensors = {n: _x(3, 5, seed=k) for k, n in enumerate(names)}
    expected, grads, torch_warnings = _torch(fn, tensors, {"p": p}, names)
    go = torch.ones_like(expected) if expected.dim() else None
    reply = handle_evaluate(REGISTRY, _request(loss, tensors, {"p": p}, grad_output=go))
    same(decode(reply.loss, as_torch=True), expected)
    for n in names:
        same(decode(reply.grads[n], as_torch=True), grads[n])
    if loss == "triplet_margin_loss" and p < 0:  # p <= 0: computed as torch does, with lossd's domain warning
        assert any("p > 0" in w for w in reply.warnings)


def test_infinite_norm_degree_in_an_objective_term() -> None:
    a, b, c = _x(3, 5), _x(3, 5, seed=1), _x(3, 5, seed=2)
    expected, grads, _ = _torch(F.triplet_margin_loss, {"anchor": a, "positive": b, "negative": c},
                                {"p": math.inf}, ("anchor",))
    request = _request("triplet_margin_loss", {"anchor": a, "positive": b, "negative": c}, {})
    request.loss = ""
    term = request.terms.add(loss="triplet_margin_loss", weight=1.0)
    term.params.update({"p": math.inf})
    reply = handle_evaluate(REGISTRY, request)
    same(decode(reply.loss, as_torch=True), expected)
    same(decode(reply.grads["anchor"], as_torch=True), grads["anchor"])


@pytest.mark.parametrize(("loss", "names", "params"), [
    ("pairwise_distance", ("x1", "x2"), {"p": math.nan}),  # NaN: refused for every parameter
    ("triplet_margin_loss", ("anchor", "positive", "negative"), {"p": math.nan}),
    ("pairwise_distance", ("x1", "x2"), {"p": math.inf, "eps": math.inf}),  # eps does not take inf
    ("triplet_margin_loss", ("anchor", "positive", "negative"), {"margin": math.inf}),
    ("smooth_l1_loss", ("input", "target"), {"beta": math.inf}),
    ("huber_loss", ("input", "target"), {"delta": -math.inf}),
    ("mse_loss", ("input", "target"), {"p": math.inf}),  # no such parameter: still the finite rule first
])
def test_other_non_finite_params_still_refused(loss: str, names: tuple[str, ...], params: dict[str, Any]) -> None:
    tensors = {n: _x(3, 5, seed=k) for k, n in enumerate(names)}
    with pytest.raises(FieldError) as e:
        handle_evaluate(REGISTRY, _request(loss, tensors, params, allow_non_finite=True))
    assert e.value.field == "params"
    assert e.value.message.startswith("numbers must be finite (NaN and Infinity cannot be parameters): ")


def test_struct_to_dict_keeps_order_and_other_values() -> None:
    from google.protobuf import struct_pb2

    params = struct_pb2.Struct()
    params.update({"eps": 0.5, "p": -math.inf, "keepdim": True})
    assert struct_to_dict(params, registry=REGISTRY, loss="PairwiseDistance") == {
        "eps": 0.5, "p": -math.inf, "keepdim": True}
    with pytest.raises(FieldError, match="numbers must be finite"):
        struct_to_dict(params)  # no loss named: no parameter takes Infinity


# ------------------------------------------------ 7. complex and bool targets (an audit, 2026-12-06)


@pytest.mark.parametrize("loss", ["cross_entropy", "linear_cross_entropy"])
@pytest.mark.parametrize("target", [torch.tensor([1 + 0.5j, 2]), torch.tensor([1.7 + 0j, 0], dtype=torch.complex128),
                                    torch.tensor([True, False])])
def test_class_index_targets_torch_refuses_are_refused(loss: str, target: torch.Tensor) -> None:
    """torch refuses a complex or bool class-index target; lossd cast it to int64 (1.7 + 0j became class 1, True
    class 1) and answered a number, strict or not."""
    x = _x(2, 3)
    tensors = {"input": x, "target": target}
    if loss == "linear_cross_entropy":
        tensors = {"input": _x(2, 4), "linear_weight": _x(3, 4, seed=1), "target": target}
    with pytest.raises(RuntimeError, match="expected (scalar type Long|target dtype to be Long)"):
        getattr(F, loss)(*tensors.values())
    with pytest.raises(FieldError, match=r"^inputs\.target: class indices must have an integer dtype, got "
                                         f"{str(target.dtype).removeprefix('torch.')}$"):
        evaluate(REGISTRY, loss, tensors, {})


@pytest.mark.parametrize(("loss", "fn"), [("binary_cross_entropy_with_logits", F.binary_cross_entropy_with_logits),
                                          ("multilabel_soft_margin_loss", F.multilabel_soft_margin_loss)])
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.int64])
def test_complex_targets_get_torchs_own_answer(loss: str, fn: Any, input_dtype: torch.dtype) -> None:
    """lossd's own [0, 1] check compared complex numbers (which torch does not order) and refused the call as
    UNIMPLEMENTED with '"ge_cpu" not implemented', blaming torch for lossd's check. Now torch decides: it
    refuses the gradient of a complex output, or an integer input, as locally."""
    x = torch.tensor([[1, -1]]).to(input_dtype)
    target = torch.tensor([[1 + 0j, 0j]])
    try:
        expected, grads, _ = _torch(fn, {"input": x, "target": target}, {},
                                    ("input", "target") if input_dtype.is_floating_point else ())
    except RuntimeError as local:
        with pytest.raises(FieldError) as remote:
            evaluate(REGISTRY, loss, {"input": x, "target": target}, {})
        assert remote.value.field == "inputs" and str(local).splitlines()[0] in remote.value.message, remote.value
        return
    r = evaluate(REGISTRY, loss, {"input": x, "target": target}, {})  # multilabel_soft_margin_loss, float input
    same(r.loss, expected)
    same(r.grads["input"], grads["input"])
    same(r.grads["target"], grads["target"])
