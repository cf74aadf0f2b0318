"""The SDK frames requests around the arrays' own memory (``frame_request``, what
``Client.evaluate`` sends; ``ItemFramer`` and ``pack_many``, what ``evaluate_many`` sends): the bytes must be exactly those upb serializes for the same
request (deterministic map order), and replies decoded from bytes must equal those decoded
from the parsed message."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from lossd._framing import field_number, join, length_delimited, map_entry, tensor_body
from lossd.client import Client, build_request
from lossd._wire import FieldError
from lossd.client._client import (
    EvaluateResult, ItemFramer, _timing, batch_outcomes, frame_request, pack_many,
)
from lossd.v1 import lossd_pb2

rng = np.random.default_rng(0)
X = rng.standard_normal((3, 4)).astype(np.float32)
BIG = rng.standard_normal(40_000).astype(np.float32)  # over the 64 KiB at which payloads are split off

CASES: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("mse", X, X), {}),
    (("mse", BIG, BIG[::-1]), {}),  # a non-contiguous array is copied once
    (("ce", X, rng.integers(0, 4, 3)), {"label_smoothing": 0.1, "weight": np.ones(4, np.float32)}),
    (("mse", X, X), {"reduction": "none", "grad_output": np.ones((3, 4), np.float32), "grad_inputs": ["y_pred"]}),
    (("mse", torch.tensor(X), torch.tensor(X)), {"allow_non_finite": True, "strict": True}),
    (("mse", torch.tensor(X, dtype=torch.bfloat16), torch.tensor(X, dtype=torch.bfloat16)), {}),
    (("mse", X.astype(">f4"), X.astype(np.float64)), {}),
    (([{"loss": "mse", "weight": 0.5}, {"loss": "l1", "params": {"reduction": "sum"}}], X, X),
     {"parameters": {"w": np.ones(3, np.float32), "a": np.zeros(2)}, "regularization": {"l2": 0.1}}),
    (("mse", X, X), {"encoding": "values"}),
    (("mse", np.float32(1), np.float32(2)), {}),  # 0-d: no shape field
    (("mse", X[:0], X[:0]), {}),  # empty: no raw field
    (("adaptive", [[1.0, 2.0]], [1]), {"params": {"cutoffs": [1, 2]}, "inputs": {"z": [0.5], "a": [1]}}),
]


@pytest.mark.parametrize(("args", "kwargs"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_framed_requests_are_upbs_bytes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    framed, framed_torch = frame_request(*args, **kwargs)
    request, as_torch = build_request(*args, **kwargs)
    assert framed == request.SerializeToString(deterministic=True)
    assert lossd_pb2.EvaluateLossRequest.FromString(framed) == request
    assert framed_torch == as_torch


def test_reply_from_bytes_is_the_reply_from_the_message() -> None:
    pieces = [lossd_pb2.EvaluateLossResponse(loss_name="mse_loss", value=0.5).SerializeToString()]
    pieces += length_delimited(field_number(lossd_pb2.EvaluateLossResponse, "loss"),
                               tensor_body("float32", (), np.float32(0.5), "raw"))
    grads = field_number(lossd_pb2.EvaluateLossResponse, "grads")
    pieces += map_entry(grads, "y_pred", tensor_body("float32", BIG.shape, BIG, "raw"))
    pieces += map_entry(grads, "y_true", tensor_body("float32", (3, 4), X, "raw"))
    data = join(pieces)
    got = EvaluateResult.from_bytes(data)
    want = EvaluateResult.from_response(lossd_pb2.EvaluateLossResponse.FromString(data))
    assert got.value == want.value == 0.5
    assert list(got.grads) == list(want.grads) == ["y_pred", "y_true"]
    for name in got.grads:
        assert got.grads[name].dtype == want.grads[name].dtype
        np.testing.assert_array_equal(got.grads[name], want.grads[name])
        assert not got.grads[name].flags.writeable
    torch_result = EvaluateResult.from_bytes(data, as_torch=True)
    assert torch.equal(torch_result.grads["y_pred"], torch.from_numpy(BIG))


#: evaluate_many's dict items: framed from the framer's caches (numpy inputs, scalar options) or
#: through build_request (lists, torch, objectives, values, prepared messages), mixed in one batch.
MANY_ITEMS: list[Any] = [
    {"loss": "mse", "y_pred": X, "y_true": X},
    {"loss": "mse", "y_pred": X * 2, "y_true": X},  # the same caches again
    {"loss": "mse_loss", "y_true": X, "y_pred": X, "reduction": "sum", "grad_inputs": ["y_pred"]},
    {"loss": "mse_loss", "y_true": X, "y_pred": X, "grad_inputs": ("y_true",), "allow_non_finite": True,
     "strict": True},
    {"loss": "huber", "y_pred": X, "y_true": X, "delta": 2, "reduction": "mean"},
    {"loss": "huber", "y_pred": X, "y_true": X, "delta": 2.0},  # 2 and 2.0: one cache entry each
    {"loss": "ce", "y_pred": X, "y_true": rng.integers(0, 4, 3), "weight": np.ones(4, np.float32),
     "label_smoothing": 0.1},
    {"loss": "mse", "y_pred": BIG, "y_true": BIG[::-1]},  # not contiguous: copied once
    {"loss": "mse", "y_pred": X.astype(">f4"), "y_true": X.astype(np.float64)},
    {"loss": "mse", "y_pred": np.float32(1) * np.ones((), np.float32), "y_true": np.zeros((), np.float32)},
    {"loss": "mse", "y_pred": X[:0], "y_true": X[:0]},
    {"loss": "mse", "y_pred": [1.0, 2.0], "y_true": [0.0, 0.0]},
    {"loss": "mse", "y_pred": torch.tensor(X), "y_true": torch.tensor(X)},
    {"loss": "mse", "y_pred": X, "y_true": X, "encoding": "values"},
    {"loss": "mse", "y_pred": X, "y_true": X, "grad_output": np.ones((3, 4), np.float32), "reduction": "none"},
    {"loss": [{"loss": "mse", "weight": 0.5}, {"loss": "l1"}], "y_pred": X, "y_true": X},
    build_request("mse", X, X, reduction="sum")[0],
    # Equal values that are not alike: each its own cached head (-0.0 went out as 0.0 after a 0.0).
    {"loss": "huber_loss", "y_pred": X, "y_true": X, "delta": 0.0},
    {"loss": "huber_loss", "y_pred": X, "y_true": X, "delta": -0.0},
    {"loss": "huber_loss", "y_pred": X, "y_true": X, "delta": 0.0},
]


def test_evaluate_many_items_are_framed_as_upb_serializes_them() -> None:
    framer = ItemFramer(False)
    for i, item in enumerate(MANY_ITEMS):
        parts, length = framer.frame(i, item)
        if isinstance(item, lossd_pb2.EvaluateLossRequest):
            request, is_torch = item, False
        else:
            request, is_torch = build_request(**item)
        assert join(parts) == request.SerializeToString(deterministic=True), i
        assert length == len(join(parts)), i
        assert framer.flags[i] == is_torch, i
    packed = list(pack_many((ItemFramer(False).frame(i, item) for i, item in enumerate(MANY_ITEMS))))
    assert len(packed) == 1
    expected = lossd_pb2.EvaluateLossBatchRequest(
        items=[m if isinstance(m, lossd_pb2.EvaluateLossRequest) else build_request(**m)[0] for m in MANY_ITEMS])
    assert packed[0].body == expected.SerializeToString(deterministic=True)


def test_a_bad_item_is_refused_as_build_request_refuses_it_naming_its_index() -> None:
    with pytest.raises(TypeError, match=r"requests\[3\]: a dict of evaluate\(\) arguments needs 'loss'"):
        ItemFramer(False).frame(3, {"y_pred": X})
    with pytest.raises(TypeError, match=r"requests\[0\]: terms\[0\]: unknown keys \['bogus'\]"):
        ItemFramer(False).frame(0, {"loss": [{"loss": "mse", "bogus": 1}], "y_pred": X, "y_true": X})


@pytest.mark.parametrize(("call", "error"), [
    # a bare KeyError: 'loss', and float()'s "could not convert string to float: 'abc'" (the SDK audit, 2026-12-06)
    (lambda: build_request([{"weight": 1}], X, X), "terms[0]: needs 'loss', the name of the term's loss"),
    (lambda: build_request([{"loss": "mse"}, {"loss": "mse", "weight": "abc"}], X, X),
     "terms[1].weight: must be a number, got 'abc'"),
    # list("y_pred"): the server was asked for the gradients of 'y', '_', 'p', ...
    (lambda: build_request("mse", X, X, grad_inputs="y_pred"),
     "grad_inputs: a list of input names, got the string 'y_pred' (write ['y_pred'])"),
    (lambda: build_request("mse", X, X, encoding="bogus"), "encoding: must be 'raw' or 'values', got 'bogus'"),
    (lambda: ItemFramer(False).frame(0, 5),  # "'int' object is not iterable"
     "requests[0]: an item is an EvaluateLossRequest or a dict of evaluate() arguments, got int"),
])
def test_a_bad_argument_is_refused_naming_it(call: Any, error: str) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert str(info.value) == error


def test_batch_replies_decode_as_each_reply_alone_with_each_header_checked_once() -> None:
    replies = []
    for k in range(3):
        reply = lossd_pb2.EvaluateLossResponse(loss_name="mse_loss", value=float(k), timing={"forward_ms": 0.5})
        reply.loss.CopyFrom(lossd_pb2.Tensor(dtype="float32", raw=np.float32(k).tobytes()))
        for name in ("y_pred", "y_true"):
            reply.grads[name].CopyFrom(lossd_pb2.Tensor(dtype="float32", shape=[3, 4], raw=(X * k).tobytes()))
        replies.append(reply)
    batch = lossd_pb2.EvaluateLossBatchResponse(results=[lossd_pb2.EvaluateLossBatchResult(response=r)
                                                         for r in replies])
    got = batch_outcomes(batch, 0, [False] * 3, raise_on_error=False)
    for k, (result, reply) in enumerate(zip(got, replies)):
        want = EvaluateResult.from_response(reply)
        assert isinstance(result, EvaluateResult)
        assert (result.value, result.loss_name, result.timing) == (want.value, want.loss_name, want.timing) == (
            float(k), "mse_loss", {"forward_ms": 0.5})
        for a, b in [(result.loss, want.loss), *((result.grads[n], want.grads[n]) for n in want.grads)]:
            assert a.tobytes() == b.tobytes() and a.shape == b.shape and a.dtype == b.dtype
            assert not a.flags.writeable  # numpy results are read-only, decoded from the cache or not
    # A later reply whose payload does not fit its (known) header is still refused by the wire rule.
    replies[2].grads["y_true"].raw = replies[2].grads["y_true"].raw[:-4]
    batch.results[2].response.CopyFrom(replies[2])
    with pytest.raises(FieldError, match=r"tensor\.raw: has 44 bytes; shape \[3, 4\] of float32 needs"):
        batch_outcomes(batch, 0, [False] * 3, raise_on_error=False)


@pytest.mark.parametrize("timing", [{}, {"forward_ms": 0.5, "encode_ms": -0.0, "decode_ms": float("nan")},
                                    {"backward_ms": 1e-300, "decode_ms": 0.0}])
def test_a_replys_timing_lists_the_fields_listfields_lists(timing: dict[str, float]) -> None:
    message = lossd_pb2.Timing(**timing)
    got, want = _timing(message), {f.name: v for f, v in message.ListFields()}
    assert list(got) == list(want) and repr(got) == repr(want)  # -0.0 and nan included, 0.0 not


class _Sent(Exception):
    """Raised by :class:`_Recording` with the bytes ``evaluate`` would have sent."""


class _Recording(Client):
    def evaluate_request(self, request: Any, *, as_torch: bool = False, timeout: float | None = None) -> Any:
        raise _Sent(request, as_torch)


def _unshared(value: Any) -> Any:
    """A copy of an array (evaluate sums the gradients of one array passed twice), else ``value``."""
    return value.clone() if isinstance(value, torch.Tensor) else value.copy() if isinstance(value, np.ndarray) else value


@pytest.mark.parametrize("item", [m for m in MANY_ITEMS if isinstance(m, dict)], ids=lambda m: str(id(m))[-4:])
def test_client_evaluate_sends_upbs_bytes_from_its_caches_cold_and_warm(item: dict[str, Any]) -> None:
    """``Client.evaluate`` frames numpy requests from the client's framer (its caches cold, then
    warm) and the rest through ``frame_request``: the bytes are upb's either way."""
    client = _Recording("127.0.0.1:1")
    kwargs = {k: _unshared(v) if k == "y_true" else v for k, v in item.items() if k != "loss"}
    request, is_torch = build_request(item["loss"], **kwargs)
    for _ in range(2):
        with pytest.raises(_Sent) as sent:
            client.evaluate(item["loss"], **kwargs)
        assert sent.value.args == (request.SerializeToString(deterministic=True), is_torch)


def test_a_clients_caches_stay_bounded() -> None:
    client = _Recording("127.0.0.1:1")
    for n in range(3 * client._CACHED):
        x = np.ones(n + 1, np.float32)
        with pytest.raises(_Sent) as sent:
            client.evaluate("mse", x, np.zeros(n + 1, np.float32), delta=float(n))
        assert sent.value.args[0] == build_request("mse", x, np.zeros(n + 1, np.float32), delta=float(n))[0] \
            .SerializeToString(deterministic=True)
        reply = lossd_pb2.EvaluateLossResponse(loss_name="mse_loss", value=float(n))
        reply.loss.CopyFrom(lossd_pb2.Tensor(dtype="float32", raw=np.float32(n).tobytes()))
        reply.grads["y_pred"].CopyFrom(lossd_pb2.Tensor(dtype="float32", shape=[n + 1], raw=(x * n).tobytes()))
        got = client._decode_reply(reply.SerializeToString(), False)
        assert got.grads["y_pred"].shape == (n + 1,) and got.grads["y_pred"].tobytes() == (x * n).tobytes()
    assert len(client._framer._heads) <= client._CACHED and len(client._framer._entries) <= client._CACHED
    assert 0 < len(client._layouts) <= client._CACHED


def test_evaluate_many_items_hold_their_own_bytes_when_the_caller_reuses_an_array() -> None:
    """A generator that refills one array for every item: each item is framed with a copy of the array's
    bytes (the batch was joined later, so every item sent the last values)."""
    buf = np.zeros(3, np.float32)

    def items() -> Any:
        for i in range(4):
            buf[:] = i
            yield {"loss": "mse", "y_pred": buf, "y_true": np.zeros(3, np.float32)}

    framer = ItemFramer(False)
    (packed,) = pack_many(framer.frame(i, item) for i, item in enumerate(items()))
    sent = lossd_pb2.EvaluateLossBatchRequest.FromString(packed.body)
    assert [np.frombuffer(item.inputs["y_pred"].raw, np.float32)[0] for item in sent.items] == [0, 1, 2, 3]


def test_client_evaluate_frames_around_the_arrays_and_copies_them_once() -> None:
    """``Client.evaluate`` joins its pieces at once, so its framer takes the arrays as they are: the join is
    the one copy of the payload (issue #13, item 4). Since the evaluate_many fix above it copied each array when
    framing too, and the join copied it again: two copies of every payload per call."""
    client = Client("127.0.0.1:9")
    x, y = np.arange(6, dtype=np.float32), np.zeros(6, np.float32)
    pieces, size = client._framer.framed({"loss": "mse", "y_pred": x, "y_true": y})
    assert sum(p is x for p in pieces) == 1 and sum(p is y for p in pieces) == 1
    assert join(pieces) == build_request("mse", x, y)[0].SerializeToString(deterministic=True) and size == len(join(pieces))


def test_numpy_scalars_keep_their_dtype_and_unfit_integers_are_refused_naming_the_input() -> None:
    request, _ = build_request("huber_loss", np.float64(2.5), np.float64(0.0), inputs={"delta": np.float64(0.1)})
    assert [request.inputs[k].dtype for k in ("y_pred", "y_true", "delta")] == ["float64"] * 3
    with pytest.raises(ValueError, match=r"inputs.y_true: cannot send uint64 values above 2\*\*63 - 1"):
        build_request("mse", [1.0, 2.0], np.array([2**64 - 1, 3], np.uint64))
    assert build_request("mse", [1.0], np.array([7], np.uint64))[0].inputs["y_true"].dtype == "int64"
    with pytest.raises(TypeError, match=r"requests\[1\]: inputs.y_pred: cannot send dtype float128"):
        ItemFramer(False).frame(1, {"loss": "mse", "y_pred": np.ones(2, np.longdouble), "y_true": X})
