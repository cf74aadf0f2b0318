"""The SDK frames requests around the arrays' own memory (``frame_request``, what
``Client.evaluate`` sends): the bytes must be exactly those upb serializes for the same
request (deterministic map order), and replies decoded from bytes must equal those decoded
from the parsed message."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from lossd._framing import field_number, join, length_delimited, map_entry, tensor_body
from lossd.client import build_request
from lossd.client._client import EvaluateResult, frame_request
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
