"""The non-finite policy against a real server (docs/losses.md, "NaN and infinite values").

EvaluateLoss refuses NaN and infinite values in inputs, parameters and grad_output by default,
naming the field, what it found and its first flat index, and how to allow them; with
``allow_non_finite`` the loss is computed as torch computes it, bit for bit. A TrainJob refuses them
in its data and constant inputs at submission, and a job whose loss becomes NaN or infinite ends
FAILED with the step.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lossd.client import AsyncClient, Client, EvaluateResult, InvalidArgument, build_request
from lossd.client.torch import RemoteLoss
from lossd.v1 import lossd_pb2
from support.refusals import assert_still_serves
from support.servers import start_in_process
from support.tools import run_tool, tool_env
from support.training import small_spec

NAN, INF = math.nan, math.inf


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with start_in_process() as addr:
        yield addr


@pytest.fixture(scope="module")
def client(address: str) -> Iterator[Client]:
    with Client(address) as c:
        yield c


def refused(client: Client, field: str, found: str, index: int, call: Any) -> str:
    with pytest.raises(InvalidArgument) as info:
        call()
    e = info.value
    assert e.field == field, e.message
    assert f"contains {found} at flat index {index} " in e.message, e.message
    assert "allow_non_finite" in e.message and "--allow-non-finite" in e.message, e.message
    assert_still_serves(client)
    return e.message


def with_bad(shape: tuple[int, ...], index: int, value: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    t = torch.linspace(-1.0, 1.0, math.prod(shape), dtype=dtype)
    t[index] = value
    return t.reshape(shape)


@pytest.mark.parametrize("encoding", ["raw", "values"])
@pytest.mark.parametrize("value, found", [(NAN, "NaN"), (INF, "Inf"), (-INF, "-Inf")])
def test_inputs_are_refused_by_default(client: Client, encoding: str, value: float, found: str) -> None:
    x, y = torch.zeros(2, 3), with_bad((2, 3), 4, value)
    refused(client, "inputs.y_true", found, 4, lambda: client.evaluate("mse", x, y, encoding=encoding))
    refused(client, "inputs.weight", found, 1, lambda: client.evaluate(
        "cross_entropy", torch.zeros(2, 3), torch.tensor([0, 2]), weight=with_bad((3,), 1, value), encoding=encoding))


def test_parameters_and_grad_output_are_refused_by_default(client: Client) -> None:
    refused(client, "parameters.fc.weight", "NaN", 3, lambda: client.evaluate(
        "mse", torch.zeros(2), torch.zeros(2), parameters={"fc.weight": with_bad((2, 2), 3, NAN)},
        regularization={"l2": 0.1}))
    refused(client, "grad_output", "Inf", 0, lambda: client.evaluate(
        "mse", torch.zeros(2), torch.ones(2), reduction="none", grad_output=with_bad((2,), 0, INF)))


@pytest.mark.parametrize(("dtype", "sent", "said"), [
    ("float32", [0.0, 1e300], "the value at flat index 1, 1e+300, is beyond float32's range (largest finite "
     "3.4028234663852886e+38) and becomes Inf; send the tensor as float64"),
    ("float16", [0.0, -7e4], "the value at flat index 1, -70000.0, is beyond float16's range (largest finite "
     "65504.0) and becomes -Inf; send the tensor as float64"),
    ("complex64", [0.0, 0.0, 1.0, 1e39], "the value at flat index 1, 1.0, 1e+39, is beyond complex64's range "
     "(largest finite 3.4028234663852886e+38) and becomes Inf; send the tensor as complex128"),
    ("float32", [0.0, float("inf")], "contains Inf at flat index 1 (the first non-finite value)"),
], ids=["float32", "float16", "complex64", "sent-as-inf"])
def test_a_finite_number_beyond_its_dtype_is_refused_naming_the_overflow(client: Client, dtype: str,
                                                                         sent: list[float], said: str) -> None:
    """torch turns it into an infinity; the refusal said "contains Inf" of a number the client sent finite."""
    shape = [len(sent) // (2 if dtype.startswith("complex") else 1)]
    for field in ("input", "target"):
        other = "target" if field == "input" else "input"
        request = lossd_pb2.EvaluateLossRequest(loss="mse", inputs={
            field: lossd_pb2.Tensor(dtype=dtype, shape=shape, values=sent),
            other: lossd_pb2.Tensor(dtype=dtype, shape=shape, values=[0.0] * len(sent))})
        with pytest.raises(InvalidArgument) as info:
            client.evaluate_request(request)
        assert info.value.field == f"inputs.{field}" and said in info.value.message, info.value.message
        assert "--allow-non-finite" in info.value.message, info.value.message
        request.allow_non_finite = True  # then evaluated as torch converts it
        if dtype != "complex64":
            assert math.isinf(client.evaluate_request(request).value)
    assert_still_serves(client)


def local(loss: str, inputs: dict[str, torch.Tensor], grad_output: torch.Tensor | None = None,
          **params: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss and the gradients of the float inputs, computed here by torch."""
    leaves = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
    out = getattr(F, loss)(*leaves.values(), **params)
    wanted = [k for k, v in leaves.items() if v.requires_grad]
    grads = torch.autograd.grad(out, [leaves[k] for k in wanted], grad_output)
    return out.detach(), dict(zip(wanted, grads))


def same_bits(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(torch.signbit(a), torch.signbit(b))  # -inf stays -inf, and NaN keeps its sign bit


CASES = [
    ("mse_loss", {"input": with_bad((3, 4), 5, NAN), "target": with_bad((3, 4), 2, INF)}, {}),
    ("mse_loss", {"input": with_bad((6,), 0, -INF, torch.float64), "target": torch.zeros(6, dtype=torch.float64)},
     {"reduction": "none"}),
    ("cross_entropy", {"input": with_bad((2, 3), 1, INF), "target": torch.tensor([0, 2])}, {}),
    ("smooth_l1_loss", {"input": with_bad((4,), 2, NAN), "target": torch.ones(4)}, {"beta": 0.5}),
    ("l1_loss", {"input": with_bad((4,), 3, INF), "target": with_bad((4,), 3, INF)}, {"reduction": "sum"}),
]


@pytest.mark.parametrize("loss, inputs, params", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_allowed_they_give_torchs_result_bit_for_bit(client: Client, loss: str, inputs: dict[str, torch.Tensor],
                                                     params: dict[str, Any]) -> None:
    result = client.evaluate(loss, inputs=inputs, params=params, allow_non_finite=True)
    upstream = None if result.value is not None else with_bad(tuple(result.loss.shape), 1, NAN, result.loss.dtype)
    expected, grads = local(loss, inputs, None if upstream is None else torch.ones_like(upstream), **params)
    same_bits(result.loss, expected)
    assert set(result.grads) == set(grads)
    for k in grads:
        same_bits(result.grads[k], grads[k])
    if upstream is not None:  # a NaN in grad_output is allowed too: the vector-Jacobian product, as torch has it
        vjp = client.evaluate(loss, inputs=inputs, params=params, grad_output=upstream, allow_non_finite=True)
        _, grads = local(loss, inputs, upstream, **params)
        for k in grads:
            same_bits(vjp.grads[k], grads[k])


def test_allowed_for_parameters_of_an_objective(client: Client) -> None:
    w = with_bad((2, 2), 2, INF)
    r = client.evaluate("mse", torch.zeros(2), torch.ones(2), parameters={"w": w}, regularization={"l2": 0.5},
                        allow_non_finite=True)
    assert r.value == INF and r.parts["l2"] == INF and r.parameter_grads["w"][1, 0] == INF


def test_stream_items_follow_their_own_setting(client: Client) -> None:
    bad = with_bad((3,), 1, NAN)
    out = client.evaluate_many([build_request("mse", bad, torch.zeros(3))[0],
                                build_request("mse", bad, torch.zeros(3), allow_non_finite=True)[0]])
    assert isinstance(out[0], InvalidArgument) and out[0].field == "inputs.y_pred" and "NaN at flat index 1" in str(out[0])
    assert isinstance(out[1], EvaluateResult) and math.isnan(out[1].value)  # type: ignore[arg-type]


def test_async_client_takes_the_keyword(address: str) -> None:
    async def go() -> tuple[float | None, str]:
        async with AsyncClient(address) as c:
            ok = await c.evaluate("mse", torch.tensor([INF]), torch.zeros(1), allow_non_finite=True)
            try:
                await c.evaluate("mse", torch.tensor([INF]), torch.zeros(1))
            except InvalidArgument as e:
                return ok.value, e.field
            return ok.value, ""
    assert asyncio.run(go()) == (INF, "inputs.y_pred")


def test_remote_loss_refuses_or_matches_local_autograd(client: Client) -> None:
    x = with_bad((4, 3), 7, NAN).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 1])
    with pytest.raises(InvalidArgument, match="inputs.y_pred: contains NaN at flat index 7"):
        RemoteLoss("cross_entropy", client=client)(x, y)
    loss = RemoteLoss("cross_entropy", client=client, allow_non_finite=True)(x, y)
    loss.backward()
    x2 = x.detach().clone().requires_grad_(True)
    expected = F.cross_entropy(x2, y)
    expected.backward()
    same_bits(loss.detach(), expected.detach())
    same_bits(x.grad, x2.grad)  # type: ignore[arg-type]


def test_cli_refuses_then_allows(address: str) -> None:
    base = [sys.executable, "-m", "lossd.client.cli", "--target", address, "eval", "mse",
            "--y-pred", "[1.0, NaN, 2.0]", "--y-true", "[0.0, 0.0, Infinity]"]
    refused_run = run_tool(base, env=tool_env())
    assert refused_run.returncode != 0
    assert "inputs.y_pred: contains NaN at flat index 1" in refused_run.stderr, refused_run.stderr
    assert "--allow-non-finite" in refused_run.stderr
    allowed = run_tool([*base, "--allow-non-finite"], env=tool_env())
    assert allowed.returncode == 0, allowed.stderr
    out = json.loads(allowed.stdout)
    assert out["value"] == "NaN" and out["grads"]["y_pred"][1] == "NaN"  # proto JSON: strict JSON parsers read it


# -- TrainJob -------------------------------------------------------------------------------------

def numbers(values: list[Any]) -> list[Any]:
    """Numbers as protobuf JSON spells them: NaN and infinities quoted."""
    return [v if math.isfinite(v) else {NAN: "NaN", INF: "Infinity", -INF: "-Infinity"}.get(v, "NaN") for v in values]


def inline(x: list[float], y: list[Any], y_dtype: str = "int64", encoding: str = "values") -> dict[str, Any]:
    def tensor(values: list[Any], dtype: str) -> dict[str, Any]:
        if encoding == "raw":
            import base64
            t = torch.tensor(values, dtype=getattr(torch, dtype)).reshape(len(values), 1)
            return {"dtype": dtype, "shape": [len(values), 1], "raw": base64.b64encode(t.numpy().tobytes()).decode()}
        return {"dtype": dtype, "shape": [len(values), 1], "values": numbers(values)}
    data = {"x": tensor(x, "float32"), "y": tensor(y, y_dtype)}
    if y_dtype == "int64":
        data["y"] = {"dtype": "int64", "shape": [len(y)], "values": y}
    return {"inline": data}


@pytest.mark.parametrize("encoding", ["values", "raw"])
def test_train_job_refuses_non_finite_data_at_submission(client: Client, encoding: str) -> None:
    before = len(client.jobs())
    ints = [0, 1, 0, 1]
    for spec, field, found, index in [
        (small_spec(data=inline([0.0, 1.0, NAN, 2.0], ints, encoding=encoding)), "data.inline.x", "NaN", 2),
        (small_spec(data=inline([0.0, 1.0, 2.0, 3.0], [0.0, INF, 1.0, 1.0], "float32", encoding), model={"linear": {}},
                    loss={"name": "mse"}, metrics=[]), "data.inline.y", "Inf", 1),
        (small_spec(data=inline([0.0, 1.0, 2.0, 3.0], ints, encoding=encoding), model={"linear": {}},
                    loss={"name": "cross_entropy", "inputs": {"weight": {"dtype": "float32", "shape": [2],
                                                                         "values": numbers([1.0, -INF])}}}),
         "loss.inputs.weight", "-Inf", 1),
    ]:
        with pytest.raises(InvalidArgument) as info:
            client.submit(spec)
        e = info.value
        assert e.field == field and f"contains {found} at flat index {index} " in e.message, e.message
        assert "TrainJob has no allow_non_finite" in e.message
    assert len(client.jobs()) == before


def one_feature(x: list[float], y: list[float]) -> dict[str, Any]:
    return {"inline": {"x": {"dtype": "float32", "shape": [len(x), 1], "values": x},
                       "y": {"dtype": "float32", "shape": [len(y), 1], "values": y}}}


@pytest.mark.parametrize("spec, word", [
    # (out - 3e38)^2 overflows float32: the first step's loss is +inf.
    (small_spec(model={"linear": {}}, loss={"name": "mse"}, optimizer={"name": "sgd", "lr": 0.1}, metrics=[],
                data=one_feature([1.0, 2.0, 3.0, 4.0], [3e38] * 4), epochs=3, batch_size=2), "infinite"),
    # Poisson NLL with log input: exp(out) - target * out is inf - inf (NaN) for the sample whose output is
    # large and positive, and +inf for the one whose output is large and negative; either sign of the weight.
    (small_spec(model={"linear": {}}, loss={"name": "poisson_nll_loss"}, optimizer={"name": "sgd", "lr": 0.1},
                metrics=[], data=one_feature([1000.0, -1000.0, 1000.0, -1000.0], [3e38] * 4), epochs=3,
                batch_size=4), "NaN"),
])
def test_a_loss_that_becomes_non_finite_fails_the_job_with_the_step(client: Client, spec: dict[str, Any],
                                                                    word: str) -> None:
    result = client.train({**spec, "step_events_per_second": 0}, progress=False, timeout=120)
    assert result.state == "FAILED" and result.message == f"loss became {word} at step 1 (epoch 1)", result.message
    assert not result.parameters  # a failed job has no parameters to hand out
