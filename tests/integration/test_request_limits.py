"""Request limits against a real server with small settings: elements per tensor, elements per
request, tensors per request and objective terms, on every path that carries tensors (EvaluateLoss, its stream,
composite terms, parameters with regularization, grad_output, TrainJob inline data and constant
loss inputs). Each refusal is RESOURCE_EXHAUSTED (INVALID_ARGUMENT when malformed), names the
field, the limit, its value and its flag, and the server goes on serving."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import torch

from lossd.client import Client, InvalidArgument, LossdError, ResourceExhausted, build_request
from lossd.v1 import lossd_pb2
from support.refusals import assert_still_serves
from support.servers import start_in_process
from support.training import small_spec

PER_TENSOR, PER_REQUEST, TENSORS, TERMS = 100, 150, 4, 3
FLAGS = {"tensor": "--max-tensor-elements", "request": "--max-request-elements", "count": "--max-tensors",
         "terms": "--max-terms"}
LIMITS = {"tensor": PER_TENSOR, "request": PER_REQUEST, "count": TENSORS, "terms": TERMS}


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with start_in_process(max_tensor_elements=PER_TENSOR, max_request_elements=PER_REQUEST,
                          max_tensors=TENSORS, max_terms=TERMS) as address, Client(address) as c:
        yield c


def refused(client: Client, kind: str, field: str, call: Any) -> LossdError:
    with pytest.raises(ResourceExhausted) as info:
        call()
    e = info.value
    assert e.field == field, e.message
    assert FLAGS[kind] in e.message and f"limit is {LIMITS[kind]} " in e.message, e.message
    assert_still_serves(client)
    return e


def z(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape)


# (kind, field at fault, evaluate() arguments): each just over one limit, and nothing else wrong.
OVER = [
    ("tensor", "inputs.y_pred.shape", {"loss": "mse", "y_pred": z(101), "y_true": z(101)}),
    ("tensor", "inputs.weight.shape", {"loss": "cross_entropy", "y_pred": z(2, 3), "y_true": torch.tensor([0, 1]),
                                       "weight": z(101)}),
    ("request", "inputs.y_true", {"loss": "mse", "y_pred": z(80), "y_true": z(80)}),
    ("tensor", "parameters.w.shape", {"loss": "mse", "y_pred": z(2), "y_true": z(2), "parameters": {"w": z(101, 1)},
                                      "regularization": {"l2": 0.1}}),
    ("request", "parameters.w", {"loss": "mse", "y_pred": z(50), "y_true": z(50), "parameters": {"w": z(51, 1)},
                                 "regularization": {"l2": 0.1}}),
    ("count", "parameters.c", {"loss": "mse", "y_pred": z(2), "y_true": z(2),
                               "parameters": {"a": z(1, 1), "b": z(1, 1), "c": z(1, 1)}}),
    ("request", "inputs.y_true", {"loss": [{"loss": "mse", "weight": 0.5}, {"loss": "l1", "weight": 0.5}],
                                  "y_pred": z(100), "y_true": z(51)}),
    ("tensor", "grad_output.shape", {"loss": "mse", "y_pred": z(2), "y_true": z(2), "reduction": "none",
                                     "grad_output": z(101)}),
    ("request", "grad_output", {"loss": "mse", "y_pred": z(60), "y_true": z(60), "reduction": "none",
                                "grad_output": z(60)}),
    ("terms", "terms", {"loss": [{"loss": "mse"}] * 4, "y_pred": z(2), "y_true": z(2)}),
]


@pytest.mark.parametrize("kind, field, kwargs", OVER, ids=[f"{k}-{f}" for k, f, _ in OVER])
def test_evaluate_over_a_limit(client: Client, kind: str, field: str, kwargs: dict[str, Any]) -> None:
    kwargs = dict(kwargs)
    refused(client, kind, field, lambda: client.evaluate(kwargs.pop("loss"), **kwargs))


def test_just_at_the_limits_is_fine(client: Client) -> None:
    assert client.evaluate("mse", z(75), z(75)).value == 0.0  # 150 elements, 2 tensors
    r = client.evaluate("mse", z(2), z(2), parameters={"a": z(1, 1), "b": z(1, 1)}, regularization={"l2": 1.0})
    assert r.value == 0.0 and set(r.parameter_grads) == {"a", "b"}  # 4 tensors
    r = client.evaluate([{"loss": "mse"}] * 3, z(2), z(2))
    assert set(r.parts) == {"mse_loss", "mse_loss#2", "mse_loss#3"}  # 3 terms


def test_stream_items_over_a_limit_fail_alone(client: Client) -> None:
    requests = [build_request("mse", z(2), z(2))[0], build_request("mse", z(80), z(80))[0],
                build_request("mse", z(101), z(101))[0], build_request("mse", torch.ones(2), z(2))[0]]
    out = client.evaluate_many(requests)
    assert [type(o).__name__ for o in out] == ["EvaluateResult", "ResourceExhausted", "ResourceExhausted",
                                               "EvaluateResult"]
    assert out[1].field == "inputs.y_true" and "--max-request-elements" in out[1].message  # type: ignore[union-attr]
    assert out[2].field == "inputs.y_pred.shape" and "--max-tensor-elements" in out[2].message  # type: ignore[union-attr]
    assert out[3].value == 1.0  # type: ignore[union-attr]


@pytest.mark.parametrize("shape", [[2**40, 2**40], [2**63 - 1, 2**63 - 1], [0, 2**62, 2**62]])
def test_shapes_that_overflow_int64_are_refused_cleanly(client: Client, shape: list[int]) -> None:
    request = lossd_pb2.EvaluateLossRequest(loss="mse", inputs={
        "input": lossd_pb2.Tensor(dtype="float32", shape=shape), "target": lossd_pb2.Tensor(dtype="float32", shape=[1],
                                                                                          raw=b"\0" * 4)})
    refused(client, "tensor", "inputs.input.shape", lambda: client.evaluate_request(request))


@pytest.mark.parametrize("tensor, field, rule", [
    (lossd_pb2.Tensor(dtype="float32", shape=[2, -1]), "inputs.input.shape", "dimension 1 is -1"),
    (lossd_pb2.Tensor(dtype="float32", shape=[3], raw=b"\0" * 8), "inputs.input.raw", "has 8 bytes"),
    (lossd_pb2.Tensor(dtype="float32", shape=[1] * 65, raw=b"\0" * 4), "inputs.input.shape", "at most 64"),
    (lossd_pb2.Tensor(dtype="int64", shape=[1], values=[2.0**63]), "inputs.input.values", "9223372036854775807"),
])
def test_malformed_tensors_are_invalid_arguments(client: Client, tensor: lossd_pb2.Tensor, field: str,
                                                 rule: str) -> None:
    request = lossd_pb2.EvaluateLossRequest(loss="mse", inputs={"input": tensor})
    with pytest.raises(InvalidArgument) as info:
        client.evaluate_request(request)
    assert info.value.field == field and rule in info.value.message, info.value.message
    assert_still_serves(client)


def inline(n: int, features: int = 1) -> dict[str, Any]:
    return {"inline": {"x": {"dtype": "float32", "shape": [n, features], "values": [0.5] * (n * features)},
                       "y": {"dtype": "int64", "shape": [n], "values": [i % 2 for i in range(n)]}}}


TRAIN_OVER = [
    ("tensor", "data.inline.x.shape", small_spec(data=inline(101))),
    ("request", "data.inline.y", small_spec(data=inline(76))),  # 76 + 76 > 150
]


@pytest.mark.parametrize("kind, field, spec", TRAIN_OVER, ids=[f for _, f, _ in TRAIN_OVER])
def test_train_job_over_a_limit(client: Client, kind: str, field: str, spec: dict[str, Any]) -> None:
    before = len(client.jobs())
    refused(client, kind, field, lambda: client.submit(spec))
    assert len(client.jobs()) == before  # nothing was queued


def test_train_job_constant_inputs_count_too(client: Client) -> None:
    spec = small_spec(data=inline(10), loss={"name": "cross_entropy", "inputs": {
        "weight": {"dtype": "float32", "shape": [101], "values": [1.0] * 101}}})
    refused(client, "tensor", "loss.inputs.weight.shape", lambda: client.submit(spec))
    spec["loss"]["inputs"]["weight"] = {"dtype": "float32", "shape": [2], "values": [1.0, 1.0]}
    spec["data"] = inline(75)  # 2 + 75 + 75 > 150: the weight's elements count in the request's
    refused(client, "request", "data.inline.y", lambda: client.submit(spec))
    spec["loss"]["inputs"] = {f"w{i}": {"dtype": "float32", "shape": [1], "values": [1.0]} for i in range(3)}
    refused(client, "count", "data.inline.y", lambda: client.submit(spec))  # 3 constant inputs + x + y > 4


def test_regularization_patterns_are_bounded(client: Client) -> None:
    """Every pattern is matched against every parameter name: 257 are refused, for an evaluation and a job."""
    patterns = [f"layer{i}.*" for i in range(257)]
    with pytest.raises(InvalidArgument) as info:
        client.evaluate("mse", z(2), z(2), parameters={"w": z(1, 1)}, regularization={"l2": 0.1, "include": patterns})
    assert info.value.field == "regularization.include" and "has 257 patterns; at most 256" in info.value.message
    r = client.evaluate("mse", z(2), z(2), parameters={"w": z(1, 1)},
                        regularization={"l2": 0.1, "include": patterns[:255] + ["w"]})
    assert r.regularized == ["w"]
    with pytest.raises(InvalidArgument) as info:
        client.submit(small_spec(data=inline(10), regularization={"l2": 0.1, "exclude": patterns}))
    assert info.value.field == "regularization.exclude", info.value
    assert_still_serves(client)


def test_a_worker_does_not_reapply_the_default_limits() -> None:
    """The server checks a job against its own limits at submission; the worker that runs it re-plans
    the spec without limits, so a job that the server's raised limits allow does not fail there."""
    from lossd.server.losses import REGISTRY
    from lossd.server.training import TrainingLimits, plan_job
    from lossd.server.losses import LossError
    from lossd.v1 import training_pb2 as pb
    from support.training import request

    spec = small_spec(data=inline(8), epochs=10_001, batch_size=8, metrics=[], step_events_per_second=1000)
    with pytest.raises(LossError, match="--max-epochs"):
        plan_job(request(spec), REGISTRY, TrainingLimits())  # the defaults would refuse it
    with start_in_process(max_epochs=20_000) as address, Client(address) as c:
        job_id = c.submit(spec)
        try:
            seen = []
            for event in c.watch(job_id):
                seen.append((pb.JobState.Name(event.state), event.message))
                if event.kind in (pb.JOB_EVENT_KIND_STEP, pb.JOB_EVENT_KIND_EPOCH):
                    break
            assert seen[-1][0] == "JOB_STATE_RUNNING", seen
        finally:
            c.cancel(job_id)


def test_a_stream_item_over_64_kib_of_a_method_without_tensors_is_invalid_argument(client: Client) -> None:
    """Server reflection's request stream (grpcurl's) carries no tensors: an item over 64 KiB is refused from its
    length. The refusal reached gRPC's reflection servicer as an exception raised by the request iterator, which
    gRPC answered UNKNOWN, naming lossd's exception class, with an ERROR traceback in the log."""
    from grpc_reflection.v1alpha import reflection_pb2

    from lossd.server.interceptors._large_requests import INLINE_PARSE_BYTES

    call = client.channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    fine = reflection_pb2.ServerReflectionRequest(list_services="")
    big = reflection_pb2.ServerReflectionRequest(file_containing_symbol="x" * (INLINE_PARSE_BYTES + 10))
    assert [r.WhichOneof("message_response") for r in call(iter([fine]), timeout=30)] == ["list_services_response"]
    with pytest.raises(grpc.RpcError) as info:
        list(call(iter([fine, big]), timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "carries no tensors" in (info.value.details() or ""), info.value.details()
    assert "FieldError" not in (info.value.details() or "")
    assert_still_serves(client)
