"""Per-signature plans (server/rpc/_plan.py): a planned request gives the very bytes of the full
path, the per-value rules still run, and only plain raw requests are planned."""

from __future__ import annotations

import numpy as np
import pytest

from lossd.client import build_request
from lossd.server.losses import REGISTRY, LossError
from lossd.server.rpc import handle_evaluate_bytes
from lossd.server.rpc._plan import Plans, signature
from lossd.v1 import lossd_pb2


def _reply(request: lossd_pb2.EvaluateLossRequest, plans: Plans | None) -> lossd_pb2.EvaluateLossResponse:
    reply = lossd_pb2.EvaluateLossResponse.FromString(handle_evaluate_bytes(REGISTRY, request, plans=plans))
    reply.ClearField("timing")
    return reply


CASES = [
    ("mse_loss", np.float32, {}, {}),
    ("huber_loss", np.float64, {"delta": 0.5, "reduction": "sum"}, {}),
    ("cross_entropy", np.float32, {"label_smoothing": 0.1}, {"int_target": np.int32}),
    ("smooth_l1_loss", np.float32, {"reduction": "none"}, {}),
]


@pytest.mark.parametrize(("loss", "dtype", "params", "extra"), CASES, ids=[c[0] for c in CASES])
def test_planned_replies_are_the_full_paths_bytes(loss: str, dtype: type, params: dict, extra: dict) -> None:
    rng = np.random.default_rng(0)
    plans = Plans()
    for seed in range(3):  # the first request makes the plan, the others use it
        rng = np.random.default_rng(seed)
        if "int_target" in extra:
            y_pred = rng.standard_normal((4, 3)).astype(dtype)
            y_true = rng.integers(0, 3, 4).astype(extra["int_target"])  # bound as int64 by the plan too
        else:
            y_pred, y_true = rng.standard_normal(5).astype(dtype), rng.standard_normal(5).astype(dtype)
        kwargs = {"grad_output": np.ones(5, dtype)} if params.get("reduction") == "none" else {}
        request, _ = build_request(loss, y_pred, y_true, **params, **kwargs)
        assert _reply(request, plans) == _reply(request, None)
        planned = signature(request, None) is not None
        assert len(plans) == (1 if planned else 0)
        if not planned:
            assert "grad_output" in kwargs  # the only case here that is not planned


def test_plan_still_refuses_non_finite_values() -> None:
    plans = Plans()
    ok, _ = build_request("mse_loss", np.ones(3, np.float32), np.zeros(3, np.float32))
    _reply(ok, plans)
    bad, _ = build_request("mse_loss", np.array([1, np.nan, 1], np.float32), np.zeros(3, np.float32))
    assert signature(bad, None) == signature(ok, None)
    with pytest.raises(LossError, match="inputs.y_pred: contains NaN at flat index 1"):
        handle_evaluate_bytes(REGISTRY, bad, plans=plans)
    allowed, _ = build_request("mse_loss", np.array([1, np.nan, 1], np.float32), np.zeros(3, np.float32),
                               allow_non_finite=True)
    assert np.isnan(_reply(allowed, plans).value)


def test_only_plain_raw_requests_are_planned() -> None:
    x, y = np.ones(3, np.float32), np.zeros(3, np.float32)
    assert signature(build_request("mse_loss", x, y)[0], None) is not None
    assert signature(build_request("mse_loss", x, y, encoding="values")[0], None) is None
    assert signature(build_request([{"loss": "mse_loss"}], x, y)[0], None) is None
    assert signature(build_request("mse_loss", x, y, reduction="none", grad_output=x)[0], None) is None
    assert signature(build_request("mse_loss", x[:0], y[:0])[0], None) is None  # empty: no payload
    # The signature tells apart what validation depends on: params, shapes, flags.
    assert signature(build_request("mse_loss", x, y, reduction="sum")[0], None) != signature(
        build_request("mse_loss", x, y)[0], None)
    assert signature(build_request("mse_loss", x[:2], y[:2])[0], None) != signature(
        build_request("mse_loss", x, y)[0], None)


def test_plans_keep_the_most_recent() -> None:
    plans = Plans(size=2)
    for n in (1, 2, 3):
        _reply(build_request("mse_loss", np.ones(n, np.float32), np.zeros(n, np.float32))[0], plans)
    assert len(plans) == 2
    assert plans.get(signature(build_request("mse_loss", np.ones(1, np.float32), np.zeros(1, np.float32))[0],
                               None) or ()) is None


def test_a_tensor_sent_for_a_parameter_is_read_by_value_never_planned() -> None:
    import torch

    plans = Plans()
    x, y = np.linspace(-3, 3, 7).astype(np.float32), np.zeros(7, np.float32)
    values = []
    for delta in (1.0, 2.0):  # same names, dtypes and shapes: only the value differs
        request, _ = build_request("huber_loss", x, y, delta=torch.tensor(delta))
        assert "delta" in request.inputs
        values.append(_reply(request, plans).value)
        assert _reply(request, plans) == _reply(request, None)
    assert len(plans) == 0 and values[0] != values[1]


def test_planned_replies_keep_the_warnings() -> None:
    plans = Plans()
    legacy, _ = build_request("mse_loss", np.ones(3, np.float32), np.zeros(3, np.float32), size_average=False)
    broadcast, _ = build_request("mse_loss", np.ones(3, np.float32), np.zeros(1, np.float32))
    for request in (legacy, broadcast):
        first, second = _reply(request, plans), _reply(request, plans)
        assert list(first.warnings) and first == second == _reply(request, None)
    assert len(plans) == 2


def test_complex_inputs_are_planned_bit_identically() -> None:
    plans = Plans()
    rng = np.random.default_rng(3)
    for _ in range(2):
        z = (rng.standard_normal(4) + 1j * rng.standard_normal(4)).astype(np.complex64)
        request, _ = build_request("l1_loss", z, np.zeros(4, np.complex64))
        assert _reply(request, plans) == _reply(request, None)


def _appending_registry():  # type: ignore[no-untyped-def]
    """A registry with a loss that changes the list and the object it is given (a plugin's defect)."""
    import torch

    from lossd.server.losses import Input, Param, Registry, register_loss

    reg = Registry()

    @register_loss("appending_loss", inputs=(Input("input", "prediction", differentiable=True), Input("target", "target")),
                   params=(Param("weights", "float_list", [1.0], "summed, then appended to"),
                           Param("options", "object", None, "count read, then raised", nullable=True)),
                   description="d", example=lambda dt: {}, registry=reg)
    def appending_loss(input, target, *, weights, options):  # type: ignore[no-untyped-def]
        scale = sum(weights) + (options or {}).get("count", 0)
        weights.append(1.0)
        if options is not None:
            options["count"] = options.get("count", 0) + 1
        return ((input - target) ** 2).sum() * scale

    return reg


@pytest.mark.parametrize("params", [{"weights": [1.0]}, {}, {"options": {"count": 0}}, {"weights": [0.5, 0.5]}],
                         ids=["sent-list", "default-list", "sent-object", "two-weights"])
@pytest.mark.parametrize("encoding", ["raw", "values"])
def test_a_loss_that_changes_its_params_changes_nothing_for_the_next_call(params: dict, encoding: str) -> None:
    """Found by the plugin audit: a kept plan passed the same list to every request of its signature (5, 10, 15, 20
    instead of 5 each), and a param's default list was the declared one, changed for every later call."""
    reg = _appending_registry()
    plans = Plans()
    x, y = np.array([1.0, 2.0], np.float32), np.zeros(2, np.float32)
    values = []
    for _ in range(4):
        request, _ = build_request("appending_loss", inputs={"input": x, "target": y}, params=params, encoding=encoding)
        values.append(lossd_pb2.EvaluateLossResponse.FromString(handle_evaluate_bytes(reg, request, plans=plans)).value)
    assert values == [5.0] * 4
    assert len(plans) == (1 if encoding == "raw" else 0)
    assert reg.get("appending_loss").params[0].default == [1.0]


def test_only_a_binding_with_a_list_or_object_copies_it() -> None:
    """The copies are decided once, when the binding (a plan's) is made: a loss without list or object params,
    or one whose are absent (null), passes its kwargs as they are."""
    import torch

    from lossd.server.evaluation import bind

    t = {"input": torch.ones(2), "target": torch.zeros(2)}
    assert not bind(REGISTRY, "mse_loss", t, {})[0].fresh and not REGISTRY.get("mse_loss").mutable_values
    reg = _appending_registry()
    assert bind(reg, "appending_loss", t, {})[0].fresh  # the default list
    assert bind(reg, "appending_loss", t, {"options": {"count": 1}})[0].fresh


def test_an_objective_term_that_changes_its_default_list_changes_nothing_for_the_next_call() -> None:
    """Objective terms bind their params per request, but a param's default was the declared list itself: a loss
    that appended to it changed the default for every later call (noticed by the plugin fix)."""
    import torch

    from lossd.server.evaluation import Term, evaluate_objective

    reg = _appending_registry()
    inputs = {"input": torch.tensor([1.0, 2.0]), "target": torch.zeros(2)}
    values = [float(evaluate_objective(reg, [Term("appending_loss", 1.0, {})], inputs, {}, None, []).loss)
              for _ in range(3)]
    assert values == [5.0] * 3 and reg.get("appending_loss").params[0].default == [1.0]


def test_a_training_loss_that_changes_its_list_param_changes_nothing_for_the_next_step() -> None:
    """A training job's LossPlan gave every step the same list and dict objects: a loss that changed them
    changed the job's later steps, and a resumed job (planned again from the declared values) no longer
    matched an uninterrupted one."""
    import torch

    from lossd.server.evaluation import bind_params
    from lossd.server.training._spec import LossPlan

    spec = _appending_registry().get("appending_loss")
    plan = LossPlan(spec, bind_params(spec, {"weights": [1.0, 1.0], "options": {"count": 0}}), "input", "target")
    values = [float(plan(torch.tensor([1.0, 2.0]), torch.zeros(2))) for _ in range(3)]
    assert values == [10.0] * 3
    assert plan.kwargs["weights"] == [1.0, 1.0] and plan.kwargs["options"] == {"count": 0}
