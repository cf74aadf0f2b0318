"""Facts about a loss live in its registration: data-parallel training reads ``batch_coupled`` and
``mean_normalizer`` from it (no list of loss names in training code); input roles are typed."""

from __future__ import annotations

import typing
from typing import Any

import pytest
import torch
from google.protobuf import json_format

from lossd._wire import FieldError
from lossd.server.losses import REDUCTION, REGISTRY, Input, InputRole, Registry, reduce, register_loss
from lossd.server.training import plan_job
from lossd.v1 import training_pb2


def _registry() -> Registry:
    registry = Registry()
    inputs = (Input("input", "prediction", differentiable=True), Input("target", "target"),
              Input("weight", "element weight", required=False))

    def example(dt: torch.dtype) -> dict[str, Any]:
        return {"input": torch.zeros(2, 1, dtype=dt), "target": torch.zeros(2, 1, dtype=dt)}

    def squared(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, *,
                reduction: str) -> torch.Tensor:
        return reduce((input - target) ** 2 * (1.0 if weight is None else weight), reduction)

    for name, facts in (("plain", {}), ("coupled", {"batch_coupled": True}),
                        ("weighted", {"mean_normalizer": "weight"})):
        register_loss(name, inputs=inputs, params=(REDUCTION,), description=name, example=example,
                      registry=registry, **facts)(squared)
    return registry


def _plan(loss: dict[str, Any], world_size: int = 2) -> Any:
    request = json_format.ParseDict({
        "model": {"linear": {}}, "data": {"builtin": {"name": "linear_regression", "params": {"n_samples": 40}}},
        "loss": loss, "optimizer": {"name": "sgd", "lr": 0.01}, "epochs": 1, "batch_size": 8,
        "world_size": world_size}, training_pb2.TrainJobRequest())
    return plan_job(request, _registry())


def test_a_plain_mean_loss_shards() -> None:
    assert _plan({"name": "plain"}).world_size == 2


def test_a_batch_coupled_loss_is_refused_with_several_ranks() -> None:
    with pytest.raises(FieldError, match="^loss.name: coupled is not a mean or sum of per-sample terms"):
        _plan({"name": "coupled", "params": {"reduction": "sum"}})
    assert _plan({"name": "coupled"}, world_size=1).world_size == 1


def test_a_weight_normalized_mean_is_refused_with_weights() -> None:
    weight = {"dtype": "float32", "shape": [1], "values": [2.0]}
    with pytest.raises(FieldError, match="^loss.inputs.weight: weighted with class weights and reduction 'mean'"):
        _plan({"name": "weighted", "inputs": {"weight": weight}})
    assert _plan({"name": "weighted", "inputs": {"weight": weight}, "params": {"reduction": "sum"}})
    assert _plan({"name": "plain", "inputs": {"weight": weight}})


def test_the_built_in_registrations_say_which_losses_do_not_shard() -> None:
    assert [s.name for s in REGISTRY if s.batch_coupled] == [
        "aucm_loss", "balanced_binary_cross_entropy_with_logits", "barlow_twins_loss", "dice_loss",
        "focal_tversky_loss", "generalized_dice_loss", "global_mutual_information_loss", "hausdorff_dt_loss",
        "info_nce_loss", "jaccard_loss", "lovasz_hinge_loss", "lovasz_softmax_loss", "mcc_loss", "nt_xent_loss",
        "psnr_loss", "tversky_loss"]
    assert [s.name for s in REGISTRY if s.mean_normalizer == "weight"] == [
        "cross_entropy", "linear_cross_entropy", "nll_loss", "sigmoid_focal_loss", "softmax_focal_loss"]


def test_every_built_in_input_role_is_a_declared_role() -> None:
    roles = set(typing.get_args(InputRole))
    assert {i.role for s in REGISTRY for i in s.inputs} == roles
