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
from lossd.server.training import BUILTINS, Control, TrainingLimits, make_builtin, plan_job, run_job
from lossd.server.training._spec import check_loss_accepts_model
from lossd.v1 import training_pb2 as pb
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
    probabilities = {"output_activation": "sigmoid"} if loss == "binary_focal_loss" else {}  # it takes [0, 1]
    p = plan(small_spec(data=data, loss={"name": loss}, model={"linear": probabilities}, metrics=[]))
    assert p.out_features == out
    assert p.target.dtype == target_dtype and tuple(p.target.shape) == target_shape
    check_loss_accepts_model(p)


@pytest.mark.parametrize(("loss", "model", "field"), [
    ("binary_focal_loss", {"linear": {}}, "model.linear.output_activation"),
    ("binary_cross_entropy", {"mlp": {"hidden": [4], "output_activation": "tanh"}}, "model.mlp.output_activation"),
    ("binary_cross_entropy", {"linear": {"output_activation": "none"}}, "model.linear.output_activation"),
])
def test_a_loss_of_probabilities_on_outputs_beyond_them_is_refused_at_submission(
        loss: str, model: dict[str, Any], field: str) -> None:
    """The trial ran the loss on zero weights' output, 0 (0.5 after a sigmoid): inside [0, 1], so a loss that
    takes probabilities was accepted on a model with no (or a tanh) output activation, and the job FAILED at
    its first step, for every seed (an audit, 2026-12-06)."""
    data = {"builtin": {"name": "rings", "params": {"n_positive": 5, "n_negative": 5}}}
    e = refusal(small_spec(data=data, loss={"name": loss}, model=model, metrics=[]))
    assert (e.code, e.field) == ("INVALID_ARGUMENT", field), str(e)
    assert "probabilities must lie in [0, 1]" in e.message and "sigmoid" in e.message, e.message
    kind = next(iter(model))
    fine = {kind: {**model[kind], "output_activation": "sigmoid"}}  # what the message advises: trains
    assert _run(plan(small_spec(data=data, loss={"name": loss}, model=fine, metrics=[]))).state == \
        pb.JOB_STATE_SUCCEEDED


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
    # float32's range: the job ran with a NaN loss (2026-12-06)
    ({"loss": {"name": "binary_focal_loss", "params": {"gamma": 1e39}}}, "INVALID_ARGUMENT", "loss.params.gamma",
     "beyond float32's range (largest finite 3.4028234663852886e+38), the dtype binary_focal_loss computes in here, and "
     "would become inf there; a job trains in float32"),
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
    ({"optimizer": {"name": "sgd", "lr": -0.1}}, "INVALID_ARGUMENT", "optimizer.lr", "must be >= 0"),
    ({"optimizer": {"name": "sgd", "param_groups": [{"patterns": ["*.bias"], "lr": -1}]}}, "INVALID_ARGUMENT",
     "optimizer.param_groups[0].lr", "must be >= 0"),
    ({"optimizer": {"name": "sgd", "momentum": 0.9, "dampening": "NaN"}}, "INVALID_ARGUMENT", "optimizer.dampening",
     "must be finite"),
    ({"optimizer": {"name": "sgd", "momentum": 0.9, "dampening": 0.1, "nesterov": True}}, "INVALID_ARGUMENT",
     "optimizer.nesterov", "dampening 0"),  # torch refuses it too (on the optimizer's own settings)
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
    ({"optimizer": {"name": "sgd", "param_groups": [{"patterns": ["*.bias"], "name": "a"},
                                                    {"patterns": ["*.weight"], "name": "a"}]}},
     "INVALID_ARGUMENT", "optimizer.param_groups[1].name", "'a' is taken by param_groups[0]"),
    # An explicit name that is an unnamed group's default label is refused at that name, whichever comes
    # first (it was blamed on the unnamed group's name, a field the request never set).
    ({"optimizer": {"name": "sgd", "param_groups": [{"patterns": ["*.bias"], "name": "param_groups[1]"},
                                                    {"patterns": ["*.weight"]}]}},
     "INVALID_ARGUMENT", "optimizer.param_groups[0].name",
     "'param_groups[1]' is taken: it is the default label of param_groups[1], which has no name"),
    ({"optimizer": {"name": "sgd", "param_groups": [{"patterns": ["*.bias"]},
                                                    {"patterns": ["*.weight"], "name": "param_groups[0]"}]}},
     "INVALID_ARGUMENT", "optimizer.param_groups[1].name", "the default label of param_groups[0]"),
    ({"schedule": {"step": {}}}, "INVALID_ARGUMENT", "schedule.step.step_size", ">= 1"),
    ({"schedule": {"exponential": {}}}, "INVALID_ARGUMENT", "schedule.exponential.gamma", "is 0 (not set); must be > 0"),
    ({"schedule": {"exponential": {"gamma": -0.5}}}, "INVALID_ARGUMENT", "schedule.exponential.gamma", "> 0"),
    ({"schedule": {"step": {"step_size": 1, "gamma": -0.5}}}, "INVALID_ARGUMENT", "schedule.step.gamma", ">= 0"),
    ({"optimizer": {"name": "adam", "eps": -1e-8}}, "INVALID_ARGUMENT", "optimizer.eps", ">= 0"),
    ({"optimizer": {"name": "rmsprop", "alpha": -0.1}}, "INVALID_ARGUMENT", "optimizer.alpha", ">= 0"),
    ({"optimizer": {"name": "sgd", "param_groups": [{"patterns": ["*.bias"], "lr": -0.1}]}},
     "INVALID_ARGUMENT", "optimizer.param_groups[0].lr", ">= 0"),
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
    # A group with lr 0 is frozen: neither term moves its parameters, so nothing stacks there.
    ({"name": "sgd", "weight_decay": 0.01, "param_groups": [{"patterns": ["fc1.*"], "lr": 0}]}, {"l2": 0.01},
     ["out.weight"]),
    ({"name": "adamw", "lr": 0, "param_groups": [{"patterns": ["fc1.*"], "lr": 0.1}]}, {"l2": 0.01}, ["fc1.weight"]),
    ({"name": "adamw", "lr": 0}, {"l2": 0.01}, []),
    # ...unless a cosine schedule raises its rate towards an eta_min > 0
    ({"name": "adamw", "lr": 0, "schedule": {"cosine": {"eta_min": 0.05}}}, {"l2": 0.01},
     ["fc1.weight", "out.weight"]),
])
def test_l2_and_weight_decay_together_warn(optimizer: dict[str, Any], regularization: dict[str, Any],
                                           warned: list[str]) -> None:
    optimizer = dict(optimizer)
    schedule = optimizer.pop("schedule", None)
    p = plan(small_spec(optimizer=optimizer, regularization=regularization,
                        **({"schedule": schedule} if schedule else {})))
    if not warned:
        assert p.warnings == ()
    else:
        (text,) = p.warnings
        assert "stack" in text and f"apply to {', '.join(warned)}: they stack" in text, text


def test_group_names_that_clash_with_no_label_are_accepted() -> None:
    """A group may take its own default label, or another group's when that group has a name of its own."""
    p = plan(small_spec(optimizer={"name": "sgd", "lr": 0.1, "param_groups": [
        {"patterns": ["*.bias"], "name": "param_groups[1]"}, {"patterns": ["fc1.weight"], "name": "first"},
        {"patterns": ["out.weight"], "name": "param_groups[2]"}]}))
    assert [g.name for g in p.optimizer.groups] == ["param_groups[1]", "first", "param_groups[2]"]


#: The warning's account of how an L2 term and each optimizer's weight_decay stack.
_STACKING = {
    "sgd": "(for sgd, the gradient gets l2*theta + weight_decay*theta)",
    "adam": "(for adam, the gradient gets l2*theta + weight_decay*theta, which adam's per-parameter scaling then "
            "treats alike)",
    "rmsprop": "(for rmsprop, the gradient gets l2*theta + weight_decay*theta, which rmsprop's per-parameter "
               "scaling then treats alike)",
    "adagrad": "(for adagrad, the gradient gets l2*theta + weight_decay*theta, which adagrad's per-parameter "
               "scaling then treats alike)",
    "adamw": "(for adamw, the L2 term's gradient l2*theta goes through Adam's scaling while weight_decay, "
             "decoupled, shrinks theta by lr*weight_decay*theta at each step)",
}


@pytest.mark.parametrize("name", list(_STACKING))
def test_the_stacking_warning_says_what_each_optimizers_weight_decay_does(name: str) -> None:
    """The sentence was "the gradient gets l2*theta + weight_decay*theta" for adamw too, whose decay is
    decoupled (the 2026-12-05 audit). Each sentence is checked against torch's step: weight_decay wd is the
    same step as the gradient plus wd*theta (sgd, adam, rmsprop, adagrad), or (adamw) as theta times
    1 - lr*wd followed by the step without decay."""
    (text,) = plan(small_spec(optimizer={"name": name, "lr": 0.1, "weight_decay": 0.05},
                              regularization={"l2": 0.01})).warnings
    assert f"they stack {_STACKING[name]}; use one of them" in text, text
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[name]
    theta0 = torch.tensor([0.5, -1.5, 2.0], dtype=torch.float64)
    grad = torch.tensor([0.25, 0.5, -1.0], dtype=torch.float64)
    decayed = theta0.clone().requires_grad_(True)
    decayed.grad = grad.clone()
    cls([decayed], lr=0.1, weight_decay=0.05).step()
    plain = theta0.clone().requires_grad_(True)
    if name == "adamw":
        with torch.no_grad():
            plain.mul_(1 - 0.1 * 0.05)
        plain.grad = grad.clone()
    else:
        plain.grad = grad + 0.05 * theta0
    cls([plain], lr=0.1, weight_decay=0.0).step()
    torch.testing.assert_close(decayed, plain, rtol=1e-15, atol=1e-15)


def test_request_json_round_trip_keeps_the_seed_spec() -> None:
    assert json_format.MessageToDict(request(SEED_RINGS), preserving_proto_field_name=True)["optimizer"] == {
        "name": "adam", "lr": 0.002}


# -- world_size > 1: a loss whose value on a batch is not the mean or sum of its shards' is refused -----

def _inline_y(y: torch.Tensor, features: int = 2) -> dict[str, Any]:
    """Inline data for ``y`` (float: a regression target as given; integer: class labels), with seeded x."""
    n = y.shape[0]
    x = torch.randn(n, features, generator=torch.Generator().manual_seed(n))
    dtype = "float32" if y.is_floating_point() else "int64"
    return {"inline": {"x": {"dtype": "float32", "shape": [n, features], "values": x.flatten().tolist()},
                       "y": {"dtype": dtype, "shape": list(y.shape), "values": y.flatten().tolist()}}}


#: 0/1 targets (N, 1) with four elements marked -1 ("ignore"), and the same without them.
_MARKED = torch.tensor([1, 0, -1, 1, 0, 0, -1, 1, 1, -1, 0, 0, 1, -1, 0, 1], dtype=torch.float32).unsqueeze(1)
_UNMARKED = _MARKED.clamp_min(0)
_LABELS = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1, 0, 0, 1, 2, 1, 0, 2, 1])


def _sharded(loss: dict[str, Any], y: torch.Tensor, world_size: int = 2) -> dict[str, Any]:
    return small_spec(loss=loss, data=_inline_y(y), model={"mlp": {"hidden": [4]}}, metrics=[], batch_size=8,
                      world_size=world_size)


@pytest.mark.parametrize("loss, y, field, words", [
    ({"name": "sigmoid_focal_loss", "params": {"normalized": True}}, _UNMARKED, "loss.params.normalized",
     "divides by the sum of the focal factors over the whole batch"),
    ({"name": "sigmoid_focal_loss", "params": {"normalized": True, "reduction": "sum"}}, _UNMARKED,
     "loss.params.normalized", "use world_size 1 or normalized false"),
    ({"name": "sigmoid_focal_loss", "params": {"ignore_index": -1}}, _MARKED, "loss.params.ignore_index",
     "count of kept elements, which differs between the ranks' shards: 4 of the training split's target values "
     "are -1"),
    ({"name": "sigmoid_focal_loss", "params": {"ignore_index": 2, "mode": "multiclass"}}, _LABELS,
     "loss.params.ignore_index", "target values are 2"),
    ({"name": "cross_entropy", "params": {"ignore_index": 1}}, _LABELS, "loss.params.ignore_index",
     "use reduction 'sum' or world_size 1"),
    ({"name": "softmax_focal_loss", "params": {"ignore_index": 0}}, _LABELS, "loss.params.ignore_index",
     "5 of the training split's target values are 0"),
    ({"name": "mutual_information_loss", "params": {"signal_dims": 2, "reduction": "mean"}}, _MARKED,
     "loss.params.signal_dims", "one signal, whose histogram spans the batch"),
    ({"name": "normalized_mutual_information_loss", "params": {"signal_dims": 2, "reduction": "sum"}}, _MARKED,
     "loss.params.signal_dims", "use world_size 1 or signal_dims 1"),
])
def test_world_size_refuses_loss_settings_whose_mean_depends_on_the_whole_batch(
        loss: dict[str, Any], y: torch.Tensor, field: str, words: str) -> None:
    check_loss_accepts_model(plan(_sharded(loss, y, world_size=1)))  # a job world_size 1 trains
    e = refusal(_sharded(loss, y))
    assert (e.code, e.field) == ("INVALID_ARGUMENT", field), str(e)
    assert words in e.message, str(e)


@pytest.mark.parametrize("loss, y", [
    ({"name": "sigmoid_focal_loss", "params": {"ignore_index": -1}}, _UNMARKED),  # no target is -1
    ({"name": "sigmoid_focal_loss", "params": {"ignore_index": -1, "reduction": "sum"}}, _MARKED),  # a sum
    ({"name": "sigmoid_focal_loss", "params": {"normalized": False}}, _MARKED.abs()),
    ({"name": "cross_entropy"}, _LABELS),  # -100, the default, is no class label
    ({"name": "cross_entropy", "params": {"ignore_index": 7}}, _LABELS),
    ({"name": "softmax_focal_loss"}, _LABELS),
    ({"name": "mutual_information_loss", "params": {"signal_dims": 1, "reduction": "mean"}}, _MARKED),
])
def test_world_size_accepts_an_ignore_index_no_training_target_holds(loss: dict[str, Any], y: torch.Tensor) -> None:
    p = plan(_sharded(loss, y))
    check_loss_accepts_model(p)
    assert p.world_size == 2


def _trainable_losses() -> list[Any]:
    out = []
    for spec in REGISTRY:
        target = next((i for i in spec.inputs if i.role == "target"), None)
        extra = [i for i in spec.inputs if i.required and i is not spec.inputs[0] and i is not target]
        if spec.inputs[0].role == "prediction" and target is not None and not extra and spec.param("reduction"):
            out.append(spec)
    return out


def _guesses(shape: tuple[int, ...], g: torch.Generator) -> list[torch.Tensor]:
    """Model outputs a loss may take: logits, probabilities, log-probabilities."""
    logits = torch.randn(shape, generator=g)
    return [logits, torch.sigmoid(logits), torch.log_softmax(logits, dim=1)]


@pytest.mark.filterwarnings("ignore")  # DomainWarnings of losses fed targets outside their documented domain
def test_world_size_accepts_a_loss_only_where_the_shards_add_up_to_the_batch() -> None:
    """For every trainable loss, its default and documented parameter sets (and ignore_index values the data
    holds), each reduction, and data of every target form: a job world_size 2 accepts computes, on any batch,
    the mean (or the sum) of the loss on the batch's two halves, which is what DDP trains. Found
    normalized, signal_dims and the ignore_index rule (the 2026-12-05 audit)."""
    torch.set_num_threads(1)  # as in the worker; tiny tensors (a pool of threads made each call 100x slower here)
    g = torch.Generator().manual_seed(0)
    datasets = [request(_sharded({}, y)) for y in (_LABELS % 2, _LABELS, _MARKED, _UNMARKED,
                                                    torch.randn(16, 3, generator=g), torch.rand(16, 1, generator=g))]
    checked = set()
    for spec in _trainable_losses():
        example = spec.example(torch.float32).get("params", {}) if spec.example else {}
        sets = [{}, dict(example), *({**example, **e.params} for e in spec.equivalents)]
        if spec.param("ignore_index") is not None:
            sets += [{"ignore_index": v} for v in (-1, 0, 1)]
        for params in sets:
            for reduction in ("mean", "sum"):
                for data in datasets:
                    job = pb.TrainJobRequest()
                    job.CopyFrom(data)
                    json_format.ParseDict({"name": spec.name, "params": {**params, "reduction": reduction}}, job.loss)
                    try:  # refused (for world_size or another reason), or accepted: then it must add up
                        p = plan_job(job, REGISTRY)
                    except LossError:
                        continue
                    target = p.target[p.train_index]
                    for output in _guesses((len(target), p.out_features), g):
                        try:
                            whole = p.loss(output, target)
                            halves = [p.loss(output[i:i + 8], target[i:i + 8]) for i in (0, 8)]
                        except (LossError, RuntimeError, ValueError):
                            continue
                        combined = (halves[0] + halves[1]) / (2 if reduction == "mean" else 1)
                        if bool(torch.isfinite(whole)):
                            assert torch.allclose(whole, combined, rtol=1e-5, atol=1e-6), (
                                spec.name, params, reduction, list(target.shape), float(whole), float(combined))
                            checked.add(spec.name)
    assert len(checked) > 25, sorted(checked)


# -- optimizer numbers beyond float32 ---------------------------------------------------------------

F32_MAX = float(torch.finfo(torch.float32).max)


def _adam_lr_limit(beta1: float) -> float:
    """The largest lr whose first Adam step, lr / (1 - beta1) as torch computes it, is a float32 number."""
    lr = F32_MAX * (1 - beta1)
    while lr / (1 - beta1) > F32_MAX:
        lr = math.nextafter(lr, 0)
    while math.nextafter(lr, math.inf) / (1 - beta1) <= F32_MAX:
        lr = math.nextafter(lr, math.inf)
    return lr


def _one_step(optimizer: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return small_spec(**{"model": {"linear": {}}, "data": {"builtin": {"name": "moons", "params": {"n_samples": 8}}},
                         "loss": {"name": "cross_entropy"}, "optimizer": optimizer, "metrics": [], "epochs": 1,
                         "batch_size": 8, "step_events_per_second": 0, **overrides})


def _run(p: Any) -> pb.JobEvent:
    events: list[pb.JobEvent] = []
    run_job(p, None, events.append, Control())
    return events[-1]


_GROUP = {"patterns": ["*.bias"]}
_NESTEROV = {"name": "sgd", "lr": 0.1, "momentum": 0.5, "nesterov": True}


@pytest.mark.parametrize("optimizer, field, limit, overrides", [
    ({"name": "sgd"}, "optimizer.lr", F32_MAX, {}),
    ({"name": "sgd", "lr": 0.1}, "optimizer.weight_decay", F32_MAX, {}),
    ({"name": "sgd", "lr": 0.1, "param_groups": [_GROUP]}, "optimizer.param_groups[0].lr", F32_MAX, {}),
    ({"name": "sgd", "lr": 0.1, "param_groups": [_GROUP]}, "optimizer.param_groups[0].weight_decay", F32_MAX, {}),
    (_NESTEROV, "optimizer.momentum", F32_MAX, {}),
    ({**_NESTEROV, "param_groups": [_GROUP]}, "optimizer.param_groups[0].momentum", F32_MAX, {}),
    ({"name": "adam"}, "optimizer.lr", _adam_lr_limit(0.9), {}),
    ({"name": "adam", "betas": [0.5, 0.9]}, "optimizer.lr", _adam_lr_limit(0.5), {}),
    ({"name": "adam", "betas": [0.0, 0.9]}, "optimizer.lr", F32_MAX, {}),
    ({"name": "adam", "lr": 0.01, "param_groups": [_GROUP]}, "optimizer.param_groups[0].lr", _adam_lr_limit(0.9),
     {}),
    ({"name": "adam"}, "optimizer.weight_decay", F32_MAX, {}),
    ({"name": "adamw"}, "optimizer.lr", _adam_lr_limit(0.9), {}),
    ({"name": "rmsprop"}, "optimizer.lr", F32_MAX, {}),
    ({"name": "rmsprop"}, "optimizer.weight_decay", F32_MAX, {}),
    ({"name": "rmsprop", "lr": 0.01}, "optimizer.alpha", F32_MAX + 1.0, {}),  # 1 - alpha: accepted, then FAILED
    ({"name": "rmsprop", "lr": 0.01, "centered": True}, "optimizer.alpha", F32_MAX + 1.0, {}),
    ({"name": "adagrad"}, "optimizer.lr", F32_MAX, {}),
    ({"name": "adagrad"}, "optimizer.weight_decay", F32_MAX, {}),
    ({"name": "sgd", "lr": 1e-3}, "schedule.cosine.eta_min", F32_MAX, {"epochs": 2}),
], ids=lambda v: v if isinstance(v, str) else None)
def test_optimizer_numbers_beyond_float32_are_refused_where_torch_fails(
        optimizer: dict[str, Any], field: str, limit: float, overrides: dict[str, Any]) -> None:
    """The largest value torch's optimizer step converts to float32 is accepted and trains; the next float64
    is refused naming the field: forced into a plan, it fails the job at that step (it was 'internal error in
    the training worker (RuntimeError)', found by the 2026-12-05 audit)."""
    torch.set_num_threads(1)

    def spec(value: float) -> dict[str, Any]:
        opt, extra = {**optimizer}, dict(overrides)
        if field.startswith("schedule."):
            extra["schedule"] = {"cosine": {"t_max": 1, "eta_min": value}}  # epoch 2 trains at eta_min
        elif field.startswith("optimizer.param_groups[0]."):
            opt["param_groups"] = [{**optimizer["param_groups"][0], field.rsplit(".", 1)[1]: value}]
        else:
            opt[field.rsplit(".", 1)[1]] = value
        return _one_step(opt, **extra)

    at_limit = _run(plan(spec(limit)))
    assert "float32" not in at_limit.message, at_limit.message  # SUCCEEDED, or FAILED on a NaN loss
    above = math.nextafter(limit, math.inf)
    e = refusal(spec(above))
    assert (e.code, e.field) == ("INVALID_ARGUMENT", field), str(e)
    assert e.message.startswith(f"is {above!r}; must be <= {limit!r}"), e.message
    forced = plan(spec(limit))  # the refused value, past plan_job: what the worker would have run
    if field.startswith("schedule."):
        forced = dataclasses.replace(forced, schedule=dataclasses.replace(
            forced.schedule, settings={**forced.schedule.settings, "eta_min": above}))
    elif field.startswith("optimizer.param_groups[0]."):
        group = forced.optimizer.groups[0]
        forced = dataclasses.replace(forced, optimizer=dataclasses.replace(forced.optimizer, groups=(
            dataclasses.replace(group, overrides={**group.overrides, field.rsplit(".", 1)[1]: above}),)))
    else:
        forced = dataclasses.replace(forced, optimizer=dataclasses.replace(
            forced.optimizer, settings={**forced.optimizer.settings, field.rsplit(".", 1)[1]: above}))
    failed = _run(forced)
    assert failed.state == pb.JOB_STATE_FAILED, failed.message
    assert "does not fit in float32: value cannot be converted to type float without overflow" in failed.message


def _two_steps(optimizer: dict[str, Any]) -> dict[str, Any]:
    return _one_step(optimizer, batch_size=4)  # 8 samples: SGD's momentum uses dampening from its second step


@pytest.mark.parametrize("limit", [F32_MAX, -F32_MAX])
def test_dampening_is_any_number_whose_one_minus_fits_in_float32(limit: float) -> None:
    """torch accepts any dampening (lossd refused outside [0, 1]); with momentum its step adds (1 - dampening) x
    the gradient as a float32 number, so |1 - dampening| beyond float32's largest value fails at the second
    step: refused naming the field. Without momentum, torch never uses it: any finite value trains."""
    torch.set_num_threads(1)
    sgd = {"name": "sgd", "lr": 1e-3, "momentum": 0.5}
    at_limit = _run(plan(_two_steps({**sgd, "dampening": limit})))
    assert at_limit.step == 2 and "float32" not in at_limit.message, at_limit.message  # SUCCEEDED or a NaN loss
    beyond = math.nextafter(limit, math.copysign(math.inf, limit))
    e = refusal(_two_steps({**sgd, "dampening": beyond}))
    assert (e.code, e.field) == ("INVALID_ARGUMENT", "optimizer.dampening"), str(e)
    assert e.message.startswith(f"is {beyond!r}; must be in [{-F32_MAX!r}, {F32_MAX!r}] with momentum"), e.message
    # A group with momentum uses the optimizer's dampening too.
    grouped = {"name": "sgd", "lr": 1e-3, "dampening": beyond, "param_groups": [{"patterns": ["*.bias"],
                                                                                  "momentum": 0.5}]}
    assert refusal(_two_steps(grouped)).field == "optimizer.dampening"
    forced = plan(_two_steps({**sgd, "dampening": limit}))
    forced = dataclasses.replace(forced, optimizer=dataclasses.replace(
        forced.optimizer, settings={**forced.optimizer.settings, "dampening": beyond}))
    failed = _run(forced)
    assert failed.state == pb.JOB_STATE_FAILED and failed.step == 1, failed.message
    assert "does not fit in float32: value cannot be converted to type float without overflow" in failed.message
    without_momentum = _run(plan(_two_steps({"name": "sgd", "lr": 1e-3, "dampening": beyond})))
    assert without_momentum.state == pb.JOB_STATE_SUCCEEDED, without_momentum.message


@pytest.mark.parametrize("optimizer", [
    {"name": "sgd", "lr": 0.1, "momentum": 1e300},  # momentum scales float64 numbers (without nesterov)
    {"name": "adam", "eps": 1e300}, {"name": "rmsprop", "eps": 1e300, "momentum": 1e300},
    {"name": "adagrad", "eps": 1e300, "lr_decay": 1e300}, {"name": "adamw", "weight_decay": 1e300},
], ids=str)
def test_optimizer_numbers_torch_takes_at_any_size_stay_accepted(optimizer: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    final = _run(plan(_one_step(optimizer)))
    assert final.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED) and "float32" not in final.message


def test_glob_patterns_are_bounded_in_all_before_any_is_compiled() -> None:
    """64 groups x 256 patterns of 1 KiB were compiled one by one (fnmatch, ~10 ms each for ``*a*a...``,
    kept in its cache for good) before "matches no parameter": minutes of a pool thread per request."""
    import time

    crafted = ["*" + "a*" * 511 + str(i) for i in range(20)]  # distinct: no cache helps
    spec = small_spec(regularization={"l2": 0.01, "include": ["*.weight"]},
                      optimizer={"name": "sgd", "param_groups": [{"patterns": crafted[:8]},
                                                                 {"patterns": ["*.bias", *crafted[8:]]}]})
    start = time.monotonic()
    e = refusal(spec)
    assert (e.code, e.field) == ("INVALID_ARGUMENT", "optimizer.param_groups[1].patterns[8]"), str(e)
    assert e.message.startswith("brings the request's glob patterns to 16404 characters; at most 16384 in all"), e.message
    assert time.monotonic() - start < 5
    # before the data set is built (a data set refused later, or a large one, is not looked at)
    assert refusal({**spec, "data": {"builtin": {"name": "no_such_set"}}}).field == e.field
    from lossd.server.training._optim import assign_groups
    groups = plan(small_spec(optimizer={"name": "sgd", "param_groups": [{"patterns": ["fc[!2].*", "out.b?as"]}]}))
    assert assign_groups(["fc1.weight", "fc2.weight", "out.bias"], groups.optimizer.groups)[1] == [
        ["fc1.weight", "out.bias"]]


def test_a_loss_params_refusal_names_the_field_once() -> None:
    """It said ``loss.loss.params: numbers must be finite``."""
    r = request(small_spec(loss={"name": "cross_entropy"}))
    r.loss.params["label_smoothing"] = float("inf")
    with pytest.raises(LossError) as info:
        plan_job(r, REGISTRY, TrainingLimits())
    assert info.value.field == "loss.params" and info.value.message.startswith("numbers must be finite"), info.value


@pytest.mark.parametrize("which", ["x", "y"])
def test_complex_inline_data_is_refused(which: str) -> None:
    """torch's layers and losses refuse complex numbers; a complex x lost its imaginary part (float32) and a
    complex y became class labels."""
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0]])
    y = torch.tensor([0.7, 1.2, 0.3])
    data = {"x": x, "y": y, which: (x if which == "x" else y).to(torch.complex64) + 1j}
    r = request(small_spec(loss={"name": "mse_loss"}))
    r.data.inline.x.CopyFrom(encode(data["x"].numpy()))
    r.data.inline.y.CopyFrom(encode(data["y"].numpy()))
    with pytest.raises(LossError) as info:
        plan_job(r, REGISTRY, TrainingLimits())
    e = info.value
    assert (e.code, e.field) == ("INVALID_ARGUMENT", f"data.inline.{which}"), str(e)
    assert e.message.startswith("is complex64; a training job's data must be real"), e.message


@pytest.mark.parametrize("spec", [
    {"optimizer": {"name": "adam", "eps": 0.0}}, {"optimizer": {"name": "adamw", "eps": 0.0}},
    {"optimizer": {"name": "rmsprop", "eps": 0.0}}, {"optimizer": {"name": "adagrad", "eps": 0.0}},
    {"optimizer": {"name": "rmsprop", "alpha": 1.5}},
    {"optimizer": {"name": "sgd", "lr": 0.1}, "schedule": {"step": {"step_size": 1, "gamma": 0.0}}, "epochs": 3},
    {"optimizer": {"name": "sgd", "lr": 0.1}, "schedule": {"step": {"step_size": 1, "gamma": 2.0}}, "epochs": 3},
    {"optimizer": {"name": "sgd", "lr": 0.1}, "schedule": {"exponential": {"gamma": 1.5}}, "epochs": 3},
], ids=str)
def test_settings_torch_takes_beyond_the_usual_ranges_are_accepted(spec: dict[str, Any]) -> None:
    """torch takes eps 0, an rmsprop alpha above 1 and any schedule gamma (lossd refused them: eps > 0, alpha
    in [0, 1], gamma in (0, 1]); the job runs, and follows torch's learning rates."""
    torch.set_num_threads(1)
    p = plan(_one_step(spec["optimizer"], **{k: v for k, v in spec.items() if k != "optimizer"}))
    final = _run(p)
    assert final.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED) and "float32" not in final.message
    if "schedule" in spec:
        events: list[pb.JobEvent] = []
        run_job(p, None, events.append, Control())
        lrs = [e.lr for e in events if e.kind == pb.JOB_EVENT_KIND_EPOCH]
        model = torch.nn.Linear(2, 2)
        sgd = torch.optim.SGD(model.parameters(), lr=0.1)
        kind = next(iter(spec["schedule"]))
        scheduler = (torch.optim.lr_scheduler.StepLR(sgd, 1, gamma=spec["schedule"]["step"]["gamma"]) if kind == "step"
                     else torch.optim.lr_scheduler.ExponentialLR(sgd, gamma=spec["schedule"]["exponential"]["gamma"]))
        expected = []
        for _ in range(3):
            expected.append(sgd.param_groups[0]["lr"])
            sgd.step()
            scheduler.step()
        assert lrs == expected, (lrs, expected)


@pytest.mark.parametrize("kind, schedule", [
    ("exponential", {"exponential": {"gamma": 1e21}}),
    ("step", {"step": {"step_size": 1, "gamma": 1e21}}),
])
def test_a_gamma_that_grows_the_learning_rate_past_float32_is_refused(kind: str, schedule: dict[str, Any]) -> None:
    """lr 1e-3 x (1e21)^2 = 1e39 in the third epoch: torch's step cannot convert it to float32 and the job
    fails there; refused naming the gamma. Two epochs (one decay, 1e18) train."""
    torch.set_num_threads(1)
    sgd = {"name": "sgd", "lr": 1e-3}
    assert "float32" not in _run(plan(_one_step(sgd, schedule=schedule, epochs=2))).message
    e = refusal(_one_step(sgd, schedule=schedule, epochs=3))
    assert (e.code, e.field) == ("INVALID_ARGUMENT", f"schedule.{kind}.gamma"), str(e)
    assert e.message.startswith("is 1e+21; 2 decays take the learning rate 0.001 past what sgd can apply in epoch 3 "
                                "of 3: its step's learning rate, a float32 number"), e.message
    forced = dataclasses.replace(plan(_one_step(sgd, schedule=schedule, epochs=2)), epochs=3)
    failed = _run(forced)
    assert failed.state == pb.JOB_STATE_FAILED, failed.message
    assert "does not fit in float32: value cannot be converted to type float without overflow" in failed.message
    # The default lr (torch's, 1e-3 for sgd) and a group's lr grow too.
    assert refusal(_one_step({"name": "sgd"}, schedule=schedule, epochs=3)).field == f"schedule.{kind}.gamma"
    grouped = {"name": "sgd", "lr": 1e-30, "param_groups": [{"patterns": ["*.bias"], "lr": 1e-3}]}
    assert refusal(_one_step(grouped, schedule=schedule, epochs=3)).field == f"schedule.{kind}.gamma"
    # An lr already over the limit is refused naming it, not the gamma that would grow it further.
    assert refusal(_one_step({"name": "sgd", "lr": 1e39}, schedule=schedule, epochs=3)).field == "optimizer.lr"


def test_adams_growing_learning_rate_is_judged_at_each_epochs_first_step() -> None:
    """Adam's step is lr / (1 - beta1**t): by epoch 3's first step (t = 3) that is 5e37 / 0.271 = 1.85e38,
    which fits in float32, so torch trains it; it was refused by the first step's limit (3.4e37)."""
    torch.set_num_threads(1)
    adam = {"name": "adam", "lr": 5e-3}
    schedule = {"exponential": {"gamma": 1e20}}
    final = _run(plan(_one_step(adam, schedule=schedule, epochs=3)))
    assert "float32" not in final.message, final.message
    e = refusal(_one_step({"name": "adam", "lr": 1e-2}, schedule=schedule, epochs=3))  # 1e38 / 0.271 = 3.7e38
    assert e.field == "schedule.exponential.gamma" and "epoch 3 of 3" in e.message and "t = 3" in e.message, e
    forced = dataclasses.replace(plan(_one_step({"name": "adam", "lr": 1e-2}, schedule=schedule, epochs=2)), epochs=3)
    failed = _run(forced)
    assert failed.state == pb.JOB_STATE_FAILED and "does not fit in float32" in failed.message, failed.message


def test_a_training_loss_param_that_takes_infinity_takes_it_in_a_job_too() -> None:
    """``Param.infinite`` (a norm degree) lets +-Infinity through EvaluateLoss's params; a job's loss.params
    refused it ("numbers must be finite") for the same loss."""
    from lossd.server.losses import Input, Param, Registry, register_loss
    from lossd.server.training._spec import plan_job
    from support.training import request, small_spec

    reg = Registry()

    @register_loss("norm_loss", inputs=(Input("input", "prediction", differentiable=True), Input("target", "target")),
                   params=(Param("p", "float", 2.0, "norm degree; inf: the max norm", infinite=True),),
                   description="d", example=lambda dt: {}, registry=reg)
    def norm_loss(input, target, *, p):  # type: ignore[no-untyped-def]
        return torch.linalg.vector_norm(input.reshape(-1) - target.reshape(-1), ord=p)

    spec = small_spec(loss={"name": "norm_loss", "params": {"p": math.inf}}, metrics=[])
    assert plan_job(request(spec), reg).loss.kwargs["p"] == math.inf


def test_a_loss_that_torch_fails_on_a_full_batch_fails_the_job_saying_so() -> None:
    """A batch-coupled loss (nt_xent's N x N similarities) passes the submission check on a few samples and
    then cannot allocate its matrix for a full batch: torch's RuntimeError ended the job "internal error in
    the training worker (RuntimeError)". It is the loss refusing the batch, as in EvaluateLoss."""
    from lossd.server.losses import Input, Registry, register_loss

    reg = Registry()

    @register_loss("pairs_loss", inputs=(Input("input", "prediction", differentiable=True), Input("target", "target")),
                   description="d", example=lambda dt: {}, registry=reg)
    def pairs_loss(input, target):  # type: ignore[no-untyped-def]
        if input.shape[0] > 8:  # as DefaultCPUAllocator says for 640 GB
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 640000000000 bytes")
        return ((input - target) ** 2).mean()

    spec = small_spec(loss={"name": "pairs_loss"}, model={"linear": {}}, metrics=[],
                      data={"builtin": {"name": "linear_regression", "params": {"n_samples": 64}}}, batch_size=32)
    p = plan_job(request(spec), reg)
    check_loss_accepts_model(p)  # 4 samples: accepted
    final = _run(p)
    assert final.state == pb.JOB_STATE_FAILED, final
    assert final.message.startswith("the loss refused the batch at step 1: ") and "can't allocate memory" in \
        final.message and "internal error" not in final.message, final.message


def test_a_job_whose_result_cannot_fit_the_message_limit_is_refused() -> None:
    """With --max-message-bytes 300000, an MLP of 40,000 parameters trained and SUCCEEDED, but its result
    (320 KB as values) could never be read: every TrainJob stream, WatchJob and GetJob with parameters
    ended "Sent message larger than max". Refused at submission naming the flag; a spec near the limit
    too (GetJob sends it back with the parameters)."""
    wide = small_spec(model={"mlp": {"hidden": [200], "output_activation": "sigmoid"}},
                      data={"builtin": {"name": "blobs", "params": {"n_samples": 100, "n_features": 200}}},
                      loss={"name": "cross_entropy"}, metrics=[])
    e = refusal(wide, max_message_bytes=300_000)
    assert (e.code, e.field) == ("RESOURCE_EXHAUSTED", "model"), str(e)
    assert "the job's result" in e.message and "--max-message-bytes" in e.message, e.message
    assert plan(wide, max_message_bytes=400_000 + 64 * 1024)  # 40,601 parameters x 8 bytes fit
    small = small_spec(name="x" * 1000)
    assert plan(small, max_message_bytes=80_000)
    # 64 KiB + the spec + 8 x 33 parameters + 2 epochs' summaries (the larger part: the field named)
    assert refusal(small, max_message_bytes=66_000).field == "epochs"



def test_a_job_whose_history_cannot_fit_the_message_limit_is_refused() -> None:
    """The terminal event carries every epoch's summary (about 180 bytes with two metrics), which the check above
    left out: 400 epochs of a model just under a 1 MiB limit SUCCEEDED, and its result could never be read (the
    job audit, 2026-12-06). Refused naming epochs where the history is the larger part."""
    from lossd.server.training._spec import epoch_summary_bytes

    spec = small_spec(model={"linear": {}}, metrics=["rmse", "mae"], epochs=400,
                      data={"builtin": {"name": "linear_regression", "params": {"n_samples": 40}}})
    limit = 64 * 1024 + 400 * epoch_summary_bytes(2)
    e = refusal(spec, max_message_bytes=limit)
    assert (e.code, e.field) == ("RESOURCE_EXHAUSTED", "epochs") and "the history of 400 epochs, at most 96400" in \
        e.message, e.message
    assert plan(spec, max_message_bytes=limit + 2000)


@pytest.mark.parametrize(("key", "limit"), [("l1", F32_MAX), ("l2", 2 * F32_MAX)])
def test_a_penalty_factor_beyond_float32_is_refused(key: str, limit: float) -> None:
    """l1 1e39 was accepted, and the job FAILED at its first step ("loss became infinite"): the penalty
    (l1 x sum|p|, 0.5 x l2 x sum p^2) is a float32 number like the parameters (an audit, 2026-12-06)."""
    torch.set_num_threads(1)
    spec = _one_step({"name": "sgd", "lr": 1e-6})
    above = math.nextafter(limit, math.inf)
    e = refusal({**spec, "regularization": {key: above, "include": ["*"]}})
    assert (e.code, e.field) == ("INVALID_ARGUMENT", f"regularization.{key}"), str(e)
    assert e.message.startswith(f"is {above!r}; must be <= {limit!r}"), e.message
    at_limit = _run(plan({**spec, "regularization": {key: limit, "include": ["*"]}}))
    assert "float32" not in at_limit.message, at_limit.message  # trains, or ends FAILED at an infinite loss


def test_a_loss_that_would_build_too_much_on_a_batch_or_the_validation_split_is_refused_at_submission() -> None:
    """nt_xent_loss builds a (2N)² matrix of the N rows it is given: a 350-byte spec with a batch of 4,000 took a
    worker 1 GB, and the validation split is given to the loss whole at each epoch's end (an audit, 2026-12-06).
    Refused at submission past MAX_LOSS_WORK, naming the setting to lower; 4,096 rows fit."""
    def spec(samples: int, batch: int, validation: float) -> dict[str, Any]:
        return {"model": {"linear": {}}, "loss": {"name": "nt_xent_loss"}, "optimizer": {"name": "sgd"},
                "data": {"builtin": {"name": "linear_regression", "params": {"n_samples": samples, "n_features": 1}},
                         "validation_fraction": validation},
                "batch_size": batch, "epochs": 1}

    check_loss_accepts_model(plan(spec(5000, 4096, 0.0)))
    e = refusal(spec(9000, 8192, 0.0))
    assert (e.field, e.code) == ("batch_size", "RESOURCE_EXHAUSTED"), e
    assert e.message.startswith("on a batch of 8192 samples, nt_xent_loss would build the (2N)² similarity matrix, "
                                "268435456 elements"), e.message
    e = refusal(spec(20000, 100, 0.5))
    assert (e.field, e.code) == ("data.validation_fraction", "RESOURCE_EXHAUSTED"), e
    assert e.message.startswith("on the validation split (10000 samples), which it is given whole, "), e.message
