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


@pytest.mark.parametrize(("typo", "meant"), [
    ("mse_los", "mse_loss"), ("MSELos", "mse_loss"), ("kl_div_los", "kl_div"), ("huber_los", "huber_loss"),
    ("smooth_l1_los", "smooth_l1_loss"), ("binary_cross_entropi", "binary_cross_entropy"),
    ("sigmoid_focal_los", "sigmoid_focal_loss"),
])
def test_a_typo_suggests_the_loss_first(typo, meant):
    with pytest.raises(LossError) as err:
        REGISTRY.get(typo)
    assert f"did you mean: {meant}" in err.value.message


def test_suggestions_are_worked_out_once_per_unknown_name_and_kept_within_a_bound(monkeypatch):
    """An unknown name is refused on the event loop and once per batch item: its "did you mean" is kept,
    so repeating the name costs a lookup; the kept answers are bounded and forgotten when a loss is added."""
    from lossd.server.losses import _registry

    calls = []
    real = _registry._close_matches
    monkeypatch.setattr(_registry, "_close_matches", lambda word, bigrams: calls.append(word) or real(word, bigrams))
    monkeypatch.setattr(_registry, "KEPT_HINTS", 3)
    reg = Registry()
    register_loss("a_loss", inputs=(Input("input", "prediction"),), description="d", example=_example,
                  registry=reg)(lambda input: input.sum())
    messages = set()
    for _ in range(5):
        with pytest.raises(LossError) as err:
            reg.get("a_los")
        messages.add(err.value.message)
    assert calls == ["a_los"] and messages == {"no loss named 'a_los'; did you mean: a_loss? (ListLosses lists them all)"}
    for name in ("b1", "b2", "b3", "b4"):
        with pytest.raises(LossError):
            reg.get(name)
    assert len(reg._hints) <= 3
    register_loss("a_lost", inputs=(Input("input", "prediction"),), description="d", example=_example,
                  registry=reg)(lambda input: input.sum())
    with pytest.raises(LossError) as err:
        reg.get("a_los")
    assert "did you mean: a_loss, a_lost?" in err.value.message or "did you mean: a_lost, a_loss?" in err.value.message


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
        (Param("n", "int", 1, "d"), 1e20, "must fit in a 64-bit integer"),  # overflowed inside torch: INTERNAL
        (Param("n", "int", 1, "d"), -(2.0**63) - 4096, "must fit in a 64-bit integer"),
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


@pytest.mark.parametrize(("loss", "params"), [("cross_entropy", {"ignore_index": 1e20}),
                                              ("nll_loss", {"ignore_index": -1e20}), ("psnr_loss", {"max_val": 1e308})])
def test_a_param_that_overflows_inside_the_loss_is_a_refusal_not_internal(loss: str, params: dict) -> None:
    """Found by the 2026-12-05 audit: an OverflowError inside the loss answered INTERNAL."""
    import numpy as np

    from lossd.client import build_request
    from lossd.server.rpc import handle_evaluate_bytes

    image = loss == "psnr_loss"
    x = np.zeros((1, 1, 4, 4) if image else (2, 3), np.float32)
    request, _ = build_request(loss, x, np.zeros_like(x) if image else np.array([0, 1]), **params)
    with pytest.raises(LossError) as err:
        handle_evaluate_bytes(REGISTRY, request)
    assert err.value.code == "INVALID_ARGUMENT", str(err.value)
