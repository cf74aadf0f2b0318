"""Job specs: every rule of ``plan_job`` (the field it names, the code), the built-in data sets,
the target/output-size rules, param groups and the L2 + weight_decay warning. No server."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

from lossd.client import encode
from lossd.server.losses import REGISTRY, LossError
from lossd.server.training import BUILTINS, TrainingLimits, make_builtin, plan_job
from lossd.server.training._spec import check_loss_accepts_model
from google.protobuf import json_format
from support.training import SEED_RINGS, request, small_spec


def plan(spec: dict[str, Any], **limits: int):  # type: ignore[no-untyped-def]
    return plan_job(request(spec), REGISTRY, TrainingLimits(**limits))


def refusal(spec: dict[str, Any], **limits: int) -> LossError:
    with pytest.raises(LossError) as info:
        p = plan(spec, **limits)
        check_loss_accepts_model(p)
    return info.value


# -- the seed's job ---------------------------------------------------------------------------------

def test_the_seed_job_plans_as_described() -> None:
    p = plan(SEED_RINGS)
    assert (p.in_features, p.out_features) == (2, 1)
    assert len(p.data) == 8000 and (len(p.train_index), len(p.val_index)) == (5600, 2400)
    assert (p.batch_size, p.steps_per_epoch, p.total_steps) == (100, 56, 1680)
    assert p.target.dtype == torch.float32 and p.target.shape == (8000, 1)
    assert p.covered == ("fc1.weight", "fc2.weight", "out.weight")  # weights, not biases
    assert p.encoding == "values" and p.metrics == ("accuracy",) and p.warnings == ()
    assert p.loss.kwargs == {"gamma": 2.0, "alpha": 0.75, "reduction": "mean"}
    assert p.classification_threshold == 0.5
    check_loss_accepts_model(p)


# -- built-in data sets ---------------------------------------------------------------------------

def test_rings_are_the_seeds_rings() -> None:
    d = make_builtin("rings", {}, default_seed=42)
    assert len(d) == 8000 and d.num_classes == 2
    assert int(d.labels.sum()) == 2000  # positives (label 1) first
    radius = d.x.to(torch.float64).norm(dim=1)
    pos, neg = radius[d.labels == 1], radius[d.labels == 0]
    assert abs(float(pos.mean()) - 5) < 0.1 and abs(float(neg.mean()) - 8) < 0.1
    assert abs(float(pos.std()) - 1) < 0.1 and abs(float(neg.std()) - 1) < 0.1  # radial noise N(0, 1)
    angle = torch.atan2(d.x[:, 1], d.x[:, 0])
    assert float(angle.min()) < -3.0 and float(angle.max()) > 3.0  # all the way round


def test_builtin_sets_are_seeded() -> None:
    a = make_builtin("rings", {"n_positive": 10, "n_negative": 10}, default_seed=1)
    b = make_builtin("rings", {"n_positive": 10, "n_negative": 10}, default_seed=1)
    c = make_builtin("rings", {"n_positive": 10, "n_negative": 10}, default_seed=2)
    d = make_builtin("rings", {"n_positive": 10, "n_negative": 10, "seed": 1}, default_seed=2)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x) and torch.equal(a.x, d.x)


@pytest.mark.parametrize("name, params, shape, classes", [
    ("moons", {"n_samples": 101}, (101, 2), 2),
    ("blobs", {"n_samples": 90, "centers": 4, "n_features": 5}, (90, 5), 4),
    ("linear_regression", {"n_samples": 50, "n_features": 3, "n_targets": 2}, (50, 3), 0),
])
def test_other_builtin_sets(name: str, params: dict[str, Any], shape: tuple[int, int], classes: int) -> None:
    d = make_builtin(name, params)
    assert tuple(d.x.shape) == shape and d.x.dtype == torch.float32
    assert d.num_classes == classes
    if classes:
        assert sorted(set(d.labels.tolist())) == list(range(classes))
    else:
        assert d.labels is None and tuple(d.y.shape) == (shape[0], 2)


def test_every_builtin_documents_its_parameters() -> None:
    for b in BUILTINS.values():
        assert b.doc and all(p.doc for p in b.params) and any(p.name == "seed" for p in b.params)


# -- targets and output sizes -----------------------------------------------------------------------

@pytest.mark.parametrize("data, loss, out, target_dtype, target_shape", [
    ({"builtin": {"name": "rings", "params": {"n_positive": 5, "n_negative": 5}}}, "binary_focal_loss", 1,
     torch.float32, (10, 1)),
    ({"builtin": {"name": "rings", "params": {"n_positive": 5, "n_negative": 5}}}, "cross_entropy", 2,
     torch.int64, (10,)),
    ({"builtin": {"name": "blobs", "params": {"n_samples": 12}}}, "nll_loss", 3, torch.int64, (12,)),
    ({"builtin": {"name": "blobs", "params": {"n_samples": 12}}}, "mse", 3, torch.float32, (12, 3)),
    ({"builtin": {"name": "linear_regression", "params": {"n_samples": 12, "n_targets": 2}}}, "huber_loss", 2,
     torch.float32, (12, 2)),
])
def test_target_and_output_size_follow_the_data_and_the_loss(
    data: dict[str, Any], loss: str, out: int, target_dtype: torch.dtype, target_shape: tuple[int, ...]
) -> None:
    p = plan(small_spec(data=data, loss={"name": loss}, model={"linear": {}}, metrics=[]))
    assert p.out_features == out
    assert p.target.dtype == target_dtype and tuple(p.target.shape) == target_shape
    check_loss_accepts_model(p)


def test_inline_data_labels_values_and_raw() -> None:
    x = [[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]]
    spec = small_spec(data={"inline": {"x": {"dtype": "float32", "shape": [4, 2], "values": sum(x, [])},
                                       "y": {"dtype": "int64", "shape": [4], "values": [0, 2, 1, 2]}}},
                      loss={"name": "cross_entropy"}, model={"linear": {}})
    p = plan(spec)
    assert (p.out_features, p.data.num_classes, p.encoding) == (3, 3, "values")
    raw = request(spec)
    raw.data.inline.x.CopyFrom(encode(torch.tensor(x).numpy()))
    raw.data.inline.y.CopyFrom(encode(torch.tensor([0, 2, 1, 2]).numpy()))
    assert plan_job(raw, REGISTRY).encoding == "raw"
    raw.output_encoding = 2  # TENSOR_ENCODING_VALUES
    assert plan_job(raw, REGISTRY).encoding == "values"
    spec["data"]["inline"]["num_classes"] = 5
    assert plan(spec).out_features == 5


def test_defaults_batch_size_and_clipping() -> None:
    spec = small_spec()
    del spec["batch_size"]
    assert plan(spec).batch_size == 32
    assert plan(small_spec(batch_size=100000)).batch_size == 300  # one batch: the whole training set


# -- refusals ---------------------------------------------------------------------------------------

def _inline(x: list[float], shape: list[int], y: list[float], y_dtype: str = "int64") -> dict[str, Any]:
    return {"inline": {"x": {"dtype": "float32", "shape": shape, "values": x},
                       "y": {"dtype": y_dtype, "shape": [len(y)], "values": y}}}


REFUSALS = [
    # (overrides, code, field, words in the message)
    ({"model": {}}, "INVALID_ARGUMENT", "model", "choose a model"),
    ({"model": {"mlp": {}}}, "INVALID_ARGUMENT", "model.mlp.hidden", "at least one"),
    ({"model": {"mlp": {"hidden": [4, 0]}}}, "INVALID_ARGUMENT", "model.mlp.hidden[1]", ">= 1"),
    ({"model": {"mlp": {"hidden": [4], "activation": "swish"}}}, "INVALID_ARGUMENT", "model.mlp.activation", "'gelu'"),
    ({"model": {"mlp": {"hidden": [4], "dropout": 1.0}}}, "INVALID_ARGUMENT", "model.mlp.dropout", "[0, 1)"),
    ({"model": {"linear": {"output_activation": "softplus"}}}, "INVALID_ARGUMENT", "model.linear.output_activation",
     "'sigmoid'"),
    ({"name": "nightly\x00run"}, "INVALID_ARGUMENT", "name", "NUL character"),
    ({"epochs": 0}, "INVALID_ARGUMENT", "epochs", ">= 1"),
    ({"batch_size": -1}, "INVALID_ARGUMENT", "batch_size", ">= 1"),
    ({"seed": -5}, "INVALID_ARGUMENT", "seed", ">= 0"),
    ({"loss": {}}, "INVALID_ARGUMENT", "loss.name", "registered loss"),
    ({"loss": {"name": "focall"}}, "NOT_FOUND", "loss.name", "focal"),
    ({"loss": {"name": "ctc_loss"}}, "INVALID_ARGUMENT", "loss.name", "a training loss must take"),
    ({"loss": {"name": "triplet_margin_loss"}}, "INVALID_ARGUMENT", "loss.name", "a training loss must take"),
    ({"loss": {"name": "binary_focal_loss", "params": {"gamma": -1}}}, "INVALID_ARGUMENT", "loss.params.gamma",
     ">= 0"),
    ({"loss": {"name": "binary_focal_loss", "params": {"beta": 1}}}, "INVALID_ARGUMENT", "loss.params.beta",
     "valid parameters"),
    ({"loss": {"name": "binary_focal_loss", "params": {"reduction": "none"}}}, "INVALID_ARGUMENT",
     "loss.params.reduction", "scalar"),
    ({"loss": {"name": "binary_focal_loss", "inputs": {"weight": {"dtype": "float32", "shape": [1], "values": [1]}}}},
     "INVALID_ARGUMENT", "loss.inputs.weight", "constant input"),
    ({"loss": {"name": "multilabel_margin_loss"}, "model": {"linear": {}}}, "INVALID_ARGUMENT", "loss.name",
     "multilabel_margin_loss"),
    ({"data": {}}, "INVALID_ARGUMENT", "data", "choose a source"),
    ({"data": {"builtin": {"name": "spirals"}}}, "NOT_FOUND", "data.builtin.name", "rings"),
    ({"data": {"builtin": {"name": "rings", "params": {"radius": 3}}}}, "INVALID_ARGUMENT",
     "data.builtin.params.radius", "radius_positive"),
    ({"data": {"builtin": {"name": "rings", "params": {"noise": -1}}}}, "INVALID_ARGUMENT",
     "data.builtin.params.noise", ">= 0"),
    ({"data": {"builtin": {"name": "rings"}, "validation_fraction": 1.0}}, "INVALID_ARGUMENT",
     "data.validation_fraction", "[0, 1)"),
    ({"data": _inline([1, 2, 3, 4, 5, 6, 7, 8], [2, 2, 2], [0, 1])}, "INVALID_ARGUMENT", "data.inline.x", "(N, D)"),
    ({"data": _inline([1, 2, 3, 4], [2, 2], [0, 1, 1])}, "INVALID_ARGUMENT", "data.inline.y", "N = 2"),
    ({"data": _inline([1, 2, 3, 4], [2, 2], [0, -1])}, "INVALID_ARGUMENT", "data.inline.y", ">= 0"),
    ({"data": _inline([1, 2, 3, 4], [2, 2], [0, 1], "float32"), "loss": {"name": "nll_loss"}}, "INVALID_ARGUMENT",
     "loss.name", "integer class labels"),
    ({"data": _inline([1, 2, 3], [2, 2], [0, 1])}, "INVALID_ARGUMENT", "data.inline.x.values", "needs 4"),
    ({"optimizer": {"name": "lbfgs"}}, "INVALID_ARGUMENT", "optimizer.name", "sgd, adam, adamw, rmsprop, adagrad"),
    ({"optimizer": {"name": "adam", "momentum": 0.9}}, "INVALID_ARGUMENT", "optimizer.momentum",
     "it is for sgd, rmsprop"),
    ({"optimizer": {"name": "sgd", "betas": [0.9, 0.99]}}, "INVALID_ARGUMENT", "optimizer.betas", "adam, adamw"),
    ({"optimizer": {"name": "adam", "betas": [0.9, 0.99, 0.9]}}, "INVALID_ARGUMENT", "optimizer.betas", "two"),
    ({"optimizer": {"name": "adam", "betas": [0.9, 1.0]}}, "INVALID_ARGUMENT", "optimizer.betas[1]", "[0, 1)"),
    ({"optimizer": {"name": "sgd", "nesterov": True}}, "INVALID_ARGUMENT", "optimizer.nesterov", "momentum > 0"),
    ({"optimizer": {"name": "sgd", "lr": 0}}, "INVALID_ARGUMENT", "optimizer.lr", "> 0"),
    ({"optimizer": {"name": "sgd", "weight_decay": -0.1}}, "INVALID_ARGUMENT", "optimizer.weight_decay", ">= 0"),
    ({"optimizer": {"name": "sgd", "param_groups": [{}]}}, "INVALID_ARGUMENT", "optimizer.param_groups[0].patterns",
     "at least one"),
    ({"optimizer": {"name": "sgd", "param_groups": [{"patterns": ["*.weight"]}, {"patterns": ["fc9.*"]}]}},
     "INVALID_ARGUMENT", "optimizer.param_groups[1].patterns", "matches no parameter; the model's parameters: fc1.weight"),
    ({"optimizer": {"name": "sgd", "param_groups": [{"patterns": ["*.weight"]}, {"patterns": ["fc1.*"]}]}},
     "INVALID_ARGUMENT", "optimizer.param_groups[1].patterns", "fc1.weight is also matched by param_groups[0]"),
    ({"optimizer": {"name": "adam", "param_groups": [{"patterns": ["*"], "momentum": 0.5}]}}, "INVALID_ARGUMENT",
     "optimizer.param_groups[0].momentum", "adam has no momentum"),
    ({"optimizer": {"name": "sgd", "param_groups": [{"patterns": ["*.bias"], "name": "default"}]}},
     "INVALID_ARGUMENT", "optimizer.param_groups[0].name", "taken"),
    ({"schedule": {"step": {}}}, "INVALID_ARGUMENT", "schedule.step.step_size", ">= 1"),
    ({"schedule": {"exponential": {}}}, "INVALID_ARGUMENT", "schedule.exponential.gamma", "(0, 1]"),
    ({"schedule": {"cosine": {"eta_min": -1}}}, "INVALID_ARGUMENT", "schedule.cosine.eta_min", ">= 0"),
    ({"metrics": ["f1"]}, "INVALID_ARGUMENT", "metrics[0]", "accuracy, mae, rmse"),
    ({"metrics": ["accuracy", "accuracy"]}, "INVALID_ARGUMENT", "metrics[1]", "twice"),
    ({"metrics": ["mae"], "loss": {"name": "cross_entropy"}}, "INVALID_ARGUMENT", "metrics[0]", "class indices"),
    ({"metrics": ["accuracy"], "loss": {"name": "mse"},
      "data": {"builtin": {"name": "linear_regression", "params": {"n_samples": 10}}}}, "INVALID_ARGUMENT",
     "metrics[0]", "regression"),
    ({"regularization": {"l1": -0.1}}, "INVALID_ARGUMENT", "regularization.l1", ">= 0"),
    ({"regularization": {"l2": 0.1, "include": ["conv*"]}}, "INVALID_ARGUMENT", "regularization.include",
     "covers none"),
    ({"step_events_per_second": -1}, "INVALID_ARGUMENT", "step_events_per_second", ">= 0"),
    # Found by the 2026-12-05 audit: INTERNAL, a FAILED job, or the wrong field before.
    ({"regularization": {"l2": 0.1, "exclude": ["*"]}}, "INVALID_ARGUMENT", "regularization.exclude", "leaves none"),
    ({"data": {"builtin": {"name": "rings", "params": {"seed": 1e20}}}}, "INVALID_ARGUMENT",
     "data.builtin.params.seed", "64-bit integer"),
    ({"loss": {"name": "cross_entropy", "params": {"ignore_index": 1e20}}, "model": {"mlp": {"hidden": [4]}}},
     "INVALID_ARGUMENT", "loss.params.ignore_index", "64-bit integer"),
    ({"loss": {"name": "mse"}, "metrics": [],
      "data": {"builtin": {"name": "linear_regression", "params": {"n_samples": 40, "noise": 1e39}}}},
     "INVALID_ARGUMENT", "data.builtin.params", "beyond float32's range"),
    ({"loss": {"name": "barlow_twins_loss"}, "metrics": [], "batch_size": 8,
      "data": {"builtin": {"name": "linear_regression", "params": {"n_samples": 41}}}},
     "INVALID_ARGUMENT", "loss.name", "on the last batch of each epoch (1 per rank)"),
    ({"loss": {"name": "barlow_twins_loss"}, "metrics": [],
      "data": {"builtin": {"name": "linear_regression", "params": {"n_samples": 51}}, "validation_fraction": 0.01}},
     "INVALID_ARGUMENT", "loss.name", "on the validation split (1)"),
]


@pytest.mark.parametrize("overrides, code, field, words", REFUSALS, ids=lambda v: v if isinstance(v, str) else None)
def test_refusals_name_the_field_and_the_rule(overrides: dict[str, Any], code: str, field: str, words: str) -> None:
    e = refusal(small_spec(**overrides))
    assert (e.code, e.field) == (code, field), str(e)
    assert words in e.message, str(e)


@pytest.mark.parametrize("overrides, limits, field, flag", [
    ({"epochs": 11}, {"max_epochs": 10}, "epochs", "--max-epochs"),
    ({"epochs": 10}, {"max_steps": 50}, "epochs", "--max-steps"),
    ({"model": {"mlp": {"hidden": [100, 100]}}}, {"max_parameters": 5000}, "model", "--max-parameters"),
    ({}, {"max_samples": 399}, "data.builtin.params", "--max-samples"),
    ({"data": _inline([1, 2, 3, 4, 5, 6], [3, 2], [0, 1, 1])}, {"max_samples": 2}, "data.inline.x", "--max-samples"),
    ({"data": {"builtin": {"name": "blobs", "params": {"n_samples": 1000, "n_features": 100}}}},
     {"max_tensor_elements": 50000}, "data.builtin.params", "--max-tensor-elements"),
])
def test_limits_answer_resource_exhausted_with_the_flag(
    overrides: dict[str, Any], limits: dict[str, int], field: str, flag: str
) -> None:
    e = refusal(small_spec(**overrides), **limits)
    assert (e.code, e.field) == ("RESOURCE_EXHAUSTED", field), str(e)
    assert flag in e.message and str(next(iter(limits.values()))) in e.message, str(e)


#: Issue 18's oversized jobs, each refused from sizes alone (default limits) before anything is built:
#: (spec overrides, field, flag).
OVERSIZED = [
    ({"data": _inline([0, 1, 2, 3], [4, 1], [0, 1, 2, 50_000_000]), "loss": {"name": "mse_loss"},
      "model": {"linear": {}}, "metrics": []}, "data.inline.y", "--max-classes"),
    ({"data": _inline([0, 1, 2, 3], [4, 1], [0, 1, 2, 1_000_000_000]), "loss": {"name": "mse_loss"},
      "model": {"linear": {}}, "metrics": []}, "data.inline.y", "--max-classes"),
    ({"data": {"inline": {**_inline([0, 1, 2, 3], [4, 1], [0, 1, 2, 3])["inline"], "num_classes": 2**31 - 1}},
      "loss": {"name": "mse_loss"}, "model": {"linear": {}}, "metrics": []}, "data.inline.num_classes",
     "--max-classes"),
    ({"data": _inline([0, 1, 2, 3], [4, 1], [0, 1, 2, 2**62]), "loss": {"name": "cross_entropy"},
      "model": {"linear": {}}, "metrics": []}, "data.inline.y", "--max-classes"),
    ({"data": {"builtin": {"name": "linear_regression", "params": {"n_samples": 10**6, "n_features": 1,
                                                                     "n_targets": 1000}}},
      "loss": {"name": "mse_loss"}, "model": {"linear": {}}, "metrics": []}, "data.builtin.params",
     "--max-tensor-elements"),
    ({"data": {"builtin": {"name": "linear_regression", "params": {"n_samples": 10**6, "n_features": 1,
                                                                     "n_targets": 100}}},
      "loss": {"name": "mse_loss"}, "model": {"linear": {}}, "metrics": []}, "data.builtin.params",
     "--max-tensor-elements"),
    ({"data": {"builtin": {"name": "blobs", "params": {"n_samples": 10**6, "centers": 1000}}},
      "loss": {"name": "mse_loss"}, "model": {"linear": {}}, "metrics": []}, "data", "--max-tensor-elements"),
    ({"model": {"mlp": {"hidden": [1] * 100_000}}}, "model.mlp.hidden", "--max-layers"),
    ({"model": {"mlp": {"hidden": [8, 10**9]}}}, "model.mlp.hidden[1]", "--max-layer-width"),
    ({"model": {"mlp": {"hidden": [20_000]}}, "batch_size": 5000,
      "data": {"builtin": {"name": "blobs", "params": {"n_samples": 20_000, "centers": 3}}},
      "loss": {"name": "cross_entropy"}, "metrics": []}, "model", "--max-tensor-elements"),  # activations
]


@pytest.mark.parametrize("overrides, field, flag", OVERSIZED, ids=lambda v: v if isinstance(v, str) else None)
def test_oversized_jobs_are_refused_from_their_sizes(overrides: dict[str, Any], field: str, flag: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from lossd.server.training import _data, _spec

    def built(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a tensor was built before the sizes were checked")
    monkeypatch.setattr(torch.nn.functional, "one_hot", built)
    monkeypatch.setattr(_spec, "build_model", built)
    for name, builtin in list(_data.BUILTINS.items()):
        monkeypatch.setitem(_data.BUILTINS, name, dataclasses.replace(builtin, make=built))
    with pytest.raises(LossError) as info:
        plan_job(request(small_spec(**overrides)), REGISTRY)
    e = info.value
    assert (e.code, e.field) == ("RESOURCE_EXHAUSTED", field), str(e)
    assert flag in e.message, str(e)


def test_the_parameter_limit_says_each_number_once() -> None:
    e = refusal(small_spec(model={"mlp": {"hidden": [100, 100]}}), max_parameters=5000)
    assert e.message.count("10501") == 1 and "5000" in e.message and "--max-parameters" in e.message, str(e)


@pytest.mark.parametrize("value", [3, 7, 2**31 - 1, -1])
def test_an_unknown_output_encoding_is_refused(value: int) -> None:
    req = request(small_spec())
    req.output_encoding = value  # type: ignore[assignment]  # protobuf keeps unknown enum numbers
    with pytest.raises(LossError) as info:
        plan_job(req, REGISTRY)
    assert (info.value.code, info.value.field) == ("INVALID_ARGUMENT", "output_encoding"), str(info.value)
    assert str(value) in info.value.message and "TENSOR_ENCODING_VALUES" in info.value.message


def test_nan_in_the_data_is_refused() -> None:
    spec = small_spec(data=_inline([1.0, 2.0, 3.0, 4.0], [2, 2], [0, 1]))
    req = request(spec)
    req.data.inline.x.values[1] = math.nan
    with pytest.raises(LossError) as info:
        plan_job(req, REGISTRY)
    assert info.value.field == "data.inline.x" and "finite" in info.value.message


# -- param groups and the L2 + weight_decay warning ------------------------------------------------

def test_decay_on_weights_not_biases_is_expressible() -> None:
    spec = small_spec(model={"mlp": {"hidden": [4, 8]}}, optimizer={
        "name": "sgd", "lr": 0.1, "param_groups": [{"patterns": ["*.weight"], "weight_decay": 0.01, "name": "decay"}]})
    p = plan(spec)
    from lossd.server.training._optim import assign_groups, build_optimizer
    default, groups, clashes = assign_groups(["fc1.weight", "fc1.bias", "out.weight", "out.bias"], p.optimizer.groups)
    assert default == ["fc1.bias", "out.bias"] and groups == [["fc1.weight", "out.weight"]] and not clashes
    from lossd.server.training import build_model
    opt = build_optimizer(p.optimizer, build_model(p.model, 2, 1))
    assert [(g["name"], g["weight_decay"], len(g["params"])) for g in opt.param_groups] == [
        ("default", 0, 3), ("decay", 0.01, 3)]


@pytest.mark.parametrize("optimizer, regularization, warned", [
    ({"name": "sgd", "weight_decay": 0.01}, {"l2": 0.01}, ["fc1.weight", "out.weight"]),
    ({"name": "adamw"}, {"l2": 0.01}, ["fc1.weight", "out.weight"]),  # adamw's default decay is 0.01
    ({"name": "sgd", "param_groups": [{"patterns": ["*.bias"], "weight_decay": 0.1}]}, {"l2": 0.01}, []),
    ({"name": "sgd", "param_groups": [{"patterns": ["out.*"], "weight_decay": 0.1}]}, {"l2": 0.01}, ["out.weight"]),
    ({"name": "sgd", "weight_decay": 0.01}, {"l1": 0.01}, []),
])
def test_l2_and_weight_decay_together_warn(optimizer: dict[str, Any], regularization: dict[str, Any],
                                           warned: list[str]) -> None:
    p = plan(small_spec(optimizer=optimizer, regularization=regularization))
    if not warned:
        assert p.warnings == ()
    else:
        (text,) = p.warnings
        assert "stack" in text and ", ".join(warned) in text, text


def test_request_json_round_trip_keeps_the_seed_spec() -> None:
    assert json_format.MessageToDict(request(SEED_RINGS), preserving_proto_field_name=True)["optimizer"] == {
        "name": "adam", "lr": 0.002}
