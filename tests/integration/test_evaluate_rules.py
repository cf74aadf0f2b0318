"""EvaluateLoss request rules through a real server: errors name the field and the rule."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import torch
from google.protobuf import struct_pb2

from lossd.client import InvalidArgument, NotFound, ResourceExhausted, build_request, encode
from lossd.v1 import lossd_pb2, lossd_pb2_grpc

LOGITS = np.array([[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]], np.float32)
TARGET = np.array([0, 2])


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [
        ({"inputs": {"input": LOGITS}}, "inputs.target", "is required"),
        ({"inputs": {"input": LOGITS, "target": TARGET, "bogus": LOGITS}}, "inputs.bogus", "valid inputs: input"),
        ({"inputs": {"input": LOGITS, "y_pred": LOGITS, "target": TARGET}}, "inputs.", "sent twice"),
        # torch's own refusal, as locally: cross_entropy has no integer kernel
        ({"inputs": {"input": np.array([[1, 0], [0, 1]]), "target": np.array([0, 1])}}, "inputs",
         "integer or bool inputs"),
        ({"inputs": {"input": LOGITS, "target": TARGET}, "params": {"size_average": "yes"}}, "params.size_average",
         "use reduction"),
        ({"inputs": {"input": LOGITS, "target": TARGET}, "params": {"reduce": 0}}, "params.reduce", "use reduction"),
        ({"inputs": {"input": LOGITS, "target": TARGET}, "params": {"smoothing": 0.1}}, "params.smoothing",
         "label_smoothing (float <= 1)"),
        ({"inputs": {"input": LOGITS, "target": TARGET}, "params": {"label_smoothing": 1.5}},
         "params.label_smoothing", "must be <= 1"),
        ({"inputs": {"input": LOGITS, "target": TARGET}, "params": {"reduction": "avg"}}, "params.reduction",
         "one of"),
        ({"inputs": {"input": LOGITS, "target": np.array([0, 3])}}, "inputs.target", "[0, 3)"),
        ({"inputs": {"input": LOGITS, "target": TARGET}, "grad_inputs": ["target"]}, "grad_inputs[0]",
         "cannot have a gradient"),
        ({"inputs": {"input": LOGITS, "target": TARGET}, "grad_inputs": ["weight"]}, "grad_inputs[0]",
         "not an input"),
        ({"inputs": {"input": LOGITS, "target": TARGET}, "params": {"reduction": "none"},
          "grad_output": np.ones(3, np.float32)}, "grad_output", "the loss has shape [2]"),
    ],
)
def test_bad_requests_name_field_and_rule(client, kwargs, field, rule):
    request, _ = build_request("cross_entropy", **kwargs)
    with pytest.raises(InvalidArgument) as err:
        client.evaluate_request(request)
    assert field in err.value.message and rule in err.value.message, err.value.message
    assert client.evaluate("ce", LOGITS, TARGET).value == pytest.approx(0.5493, abs=1e-4)  # still serving


def test_mixed_float_dtypes_are_promoted_as_in_torch(client):
    x, y = np.arange(3, dtype=np.float32), np.ones(3, np.float64)
    r = client.evaluate("mse", x, y)
    expected = torch.nn.functional.mse_loss(torch.from_numpy(x), torch.from_numpy(y))
    assert r.loss.dtype == np.float64 and r.value == expected.item()
    assert r.grads["y_pred"].dtype == np.float32 and r.grads["y_true"].dtype == np.float64


def test_unknown_loss_suggests(client):
    with pytest.raises(NotFound, match="did you mean: .*mse_loss"):
        client.evaluate("mse_los", [1.0], [1.0])


def test_grad_inputs_selects_gradients(client):
    r = client.evaluate("mse", [1.0, 2.0], [0.0, 0.0], grad_inputs=["y_pred"])
    assert list(r.grads) == ["y_pred"]
    r = client.evaluate("mse", [1.0, 2.0], [0.0, 0.0])
    assert sorted(r.grads) == ["y_pred", "y_true"]
    np.testing.assert_array_equal(r.grads["y_true"], -r.grads["y_pred"])


def test_grad_output_gives_vector_jacobian_product(client):
    x = torch.tensor([1.0, 2.0, 3.0])
    y = torch.tensor([0.0, 0.0, 1.0])
    v = torch.tensor([1.0, -1.0, 0.5])
    r = client.evaluate("mse", x, y, reduction="none", grad_output=v)
    assert r.value is None
    xl = x.clone().requires_grad_()
    loss = torch.nn.functional.mse_loss(xl, y, reduction="none")
    (g,) = torch.autograd.grad(loss, xl, v)
    assert torch.equal(r.loss, loss.detach()) and torch.equal(r.grads["y_pred"], g)


def test_integer_targets_of_any_width_are_accepted(client):
    for dt in (np.int8, np.int16, np.int32, np.uint8):
        assert client.evaluate("ce", LOGITS, TARGET.astype(dt)).value == pytest.approx(0.5493, abs=1e-4)


def test_reply_encoding_follows_request_unless_asked(server_address):
    with grpc.insecure_channel(server_address) as ch:
        stub = lossd_pb2_grpc.LossServiceStub(ch)
        values = lossd_pb2.EvaluateLossRequest(
            loss="ce", inputs={"input": encode(LOGITS, "values"), "target": encode(TARGET, "values")})
        reply = stub.EvaluateLoss(values)
        assert reply.loss.values and not reply.loss.raw and reply.grads["input"].values
        raw = lossd_pb2.EvaluateLossRequest(loss="ce", inputs={"input": encode(LOGITS), "target": encode(TARGET)})
        assert stub.EvaluateLoss(raw).grads["input"].raw
        raw.output_encoding = lossd_pb2.TENSOR_ENCODING_VALUES
        forced = stub.EvaluateLoss(raw)
        assert forced.grads["input"].values and forced.loss_name == "cross_entropy"
        assert forced.timing.forward_ms > 0
        for unknown in (3, 7, -1):  # protobuf keeps an unknown enum number: refused, not taken as "as sent"
            raw.output_encoding = unknown  # type: ignore[assignment]
            with pytest.raises(grpc.RpcError) as info:
                stub.EvaluateLoss(raw)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details().startswith(f"output_encoding: is {unknown}; must be"), info.value.details()


def test_params_struct_accepts_json_numbers(server_address):
    with grpc.insecure_channel(server_address) as ch:
        stub = lossd_pb2_grpc.LossServiceStub(ch)
        params = struct_pb2.Struct()
        params.update({"ignore_index": 2.0, "reduction": "sum"})
        req = lossd_pb2.EvaluateLossRequest(
            loss="ce", inputs={"input": encode(LOGITS), "target": encode(TARGET)}, params=params)
        expected = torch.nn.functional.cross_entropy(torch.from_numpy(LOGITS), torch.from_numpy(TARGET),
                                                     ignore_index=2, reduction="sum")
        assert stub.EvaluateLoss(req).value == expected.item()


def test_element_cap_refuses_before_allocating(client):
    huge = lossd_pb2.EvaluateLossRequest(
        loss="mse", inputs={"input": lossd_pb2.Tensor(dtype="float32", shape=[10**9, 10**9]),
                            "target": encode([1.0])})
    with pytest.raises(ResourceExhausted, match=r"inputs.input.shape.*limit"):
        client.evaluate_request(huge)


@pytest.mark.parametrize("params", [{"eps": float("inf")}, {"p": float("nan")},
                                    {"p": float("inf"), "eps": float("-inf")}])
def test_non_finite_parameter_numbers_are_refused(client, params):
    # p = +-inf is torch's max (min) norm and is taken (tests/integration/test_torch_acceptance.py); no other
    # parameter takes infinity, and none takes NaN
    request, _ = build_request("pairwise_distance", inputs={"x1": [[1.0, 2.0]], "x2": [[0.0, 0.0]]}, params=params)
    with pytest.raises(InvalidArgument, match="params: numbers must be finite"):
        client.evaluate_request(request)
