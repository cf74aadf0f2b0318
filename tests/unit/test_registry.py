"""Registry rules: names, aliases, suggestions, parameter coercion."""

from __future__ import annotations

import pytest
import torch

from lossd.server.losses import REDUCTION, REGISTRY, Input, LossError, Param, Registry, register_loss


@pytest.mark.parametrize(
    "alias",
    ["cross_entropy", "CrossEntropyLoss", "nn.CrossEntropyLoss", "torch.nn.CrossEntropyLoss",
     "F.cross_entropy", "torch.nn.functional.cross_entropy", "ce", "CE"],
)
def test_aliases_resolve_to_canonical_name(alias):
    assert REGISTRY.get(alias).name == "cross_entropy"


def test_unknown_loss_is_not_found_with_close_names():
    with pytest.raises(LossError) as err:
        REGISTRY.get("cross_entropi")
    assert err.value.code == "NOT_FOUND" and err.value.field == "loss"
    assert "did you mean: cross_entropy" in err.value.message


def test_empty_loss_name_is_invalid():
    with pytest.raises(LossError) as err:
        REGISTRY.get("")
    assert err.value.code == "INVALID_ARGUMENT"


def _example(dt):
    return {"input": torch.ones(2, dtype=dt)}


def test_names_and_aliases_are_unique():
    reg = Registry()
    deco = register_loss("a_loss", aliases=("A",), inputs=(Input("input", "prediction"),),
                         description="d", example=_example, registry=reg)
    deco(lambda input: input.sum())
    with pytest.raises(ValueError, match="already registered"):
        register_loss("b_loss", aliases=("a",), inputs=(), description="d", example=_example, registry=reg)(
            lambda: None)


def test_every_entry_is_complete():
    names = set()
    for spec in REGISTRY:
        assert spec.description and spec.source and spec.inputs, spec.name
        assert spec.inputs[0].aliases[:1] == ("y_pred",), f"{spec.name}: first input needs alias y_pred"
        for n in (spec.name, *spec.aliases):
            assert n.lower() not in names
            names.add(n.lower())
        for p in spec.params:
            assert p.doc, f"{spec.name}.{p.name} has no doc"
            if p.default is not None:
                assert p.coerce(p.default) == p.default, f"{spec.name}.{p.name} default breaks its own schema"
        tensors, params = spec.example_inputs(torch.float64)
        assert set(tensors) <= {i.name for i in spec.inputs}


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        (Param("n", "int", 1, "d", min=0), 3.0, 3),
        (Param("x", "float", 1.0, "d"), 2, 2.0),
        (Param("b", "bool", False, "d"), True, True),
        (REDUCTION, "sum", "sum"),
        (Param("l", "int_list", [], "d"), [1.0, 2.0], [1, 2]),
        (Param("o", "int", None, "d", nullable=True), None, None),
    ],
)
def test_param_coercion(param, value, expected):
    out = param.coerce(value)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    ("param", "value", "rule"),
    [
        (Param("n", "int", 1, "d"), 1.5, "must be an integer"),
        (Param("n", "int", 1, "d"), "3", "must be an integer"),
        (Param("x", "float", 1.0, "d", min=0.0, max=1.0), -0.1, "[0, 1]"),
        (Param("x", "float", 1.0, "d", min=0.0, min_exclusive=True), 0.0, "> 0"),
        (Param("x", "float", 1.0, "d"), True, "must be a number"),
        (Param("b", "bool", False, "d"), 1, "true or false"),
        (REDUCTION, "avg", "one of ['none', 'mean', 'sum']"),
        (REDUCTION, None, "not null"),
        (Param("l", "int_list", [], "d"), [1, 2.5], "params.l[1]"),
    ],
)
def test_param_rules_name_field_and_rule(param, value, rule):
    with pytest.raises(LossError) as err:
        param.coerce(value)
    assert rule in str(err.value)
    assert err.value.field.startswith(f"params.{param.name}")


def test_module_class_registers_with_params_to_init_and_inputs_to_forward():
    from lossd.server import evaluate

    reg = Registry()

    @register_loss("scaled_l1", inputs=(Input("input", "prediction", differentiable=True, aliases=("y_pred",)),
                                        Input("target", "target", aliases=("y_true",))),
                   params=(Param("scale", "float", 1.0, "factor"),), description="d", example=_example, registry=reg)
    class ScaledL1(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.scale = scale

        def forward(self, input, target):
            return self.scale * (input - target).abs().sum()

    assert isinstance(ScaledL1, type)  # the decorator returns the class unchanged
    r = evaluate(reg, "scaled_l1", {"y_pred": torch.tensor([1.0, -2.0]), "y_true": torch.zeros(2)}, {"scale": 2.0})
    assert r.loss.item() == 6.0 and r.grads["y_pred"].tolist() == [2.0, -2.0]


def test_staging_collects_registrations_without_touching_the_registry():
    from lossd.server.losses._registry import staging

    before = len(REGISTRY)
    with staging() as staged:
        register_loss("staged_only", inputs=(Input("input", "prediction"),), description="d", example=_example)(
            lambda input: input.sum())
    assert "staged_only" in staged and "staged_only" not in REGISTRY and len(REGISTRY) == before
