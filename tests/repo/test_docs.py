"""docs/losses.md is generated from the registry and must be current (regenerate: ``make docs``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from google.protobuf import json_format

from lossd.server.losses._docs import example_request, example_request_json, main, render_losses_markdown
from lossd.server.rpc import handle_evaluate
from lossd.server.losses import REDUCTION, REGISTRY, Input, Param, Registry, register_loss
from lossd.v1 import lossd_pb2

REPO = Path(__file__).resolve().parents[2]
LOSSES_MD = REPO / "docs" / "losses.md"


def test_losses_md_is_current() -> None:
    fresh = render_losses_markdown(REGISTRY)
    current = LOSSES_MD.read_text(encoding="utf-8") if LOSSES_MD.exists() else ""
    assert current == fresh, (
        "docs/losses.md is stale (the loss registry changed): run `make docs` "
        "(python -m lossd.server.losses._docs --out docs/losses.md) and commit the result"
    )


def test_render_is_deterministic() -> None:
    assert render_losses_markdown(REGISTRY) == render_losses_markdown(REGISTRY)


def test_every_loss_has_an_index_row_and_a_section() -> None:
    text = render_losses_markdown(REGISTRY)
    assert f"lossd serves {len(REGISTRY)} losses" in text
    for spec in REGISTRY:
        assert f"[`{spec.name}`](#{spec.name})" in text
        assert f"\n## {spec.name}\n" in text
        for alias in spec.aliases:
            assert f"`{alias}`" in text
        for p in spec.params:
            assert f"| `{p.name}` |" in text


@pytest.mark.parametrize("loss", [s.name for s in REGISTRY])
def test_example_is_a_valid_request_that_evaluates(loss: str) -> None:
    spec = REGISTRY.get(loss)
    request = json_format.Parse(example_request_json(spec), lossd_pb2.EvaluateLossRequest())
    assert json_format.MessageToDict(request)["loss"] == loss
    for name, tensor in request.inputs.items():
        assert tensor.values or not tensor.shape or 0 in tensor.shape, f"{name} should use values"
        assert not tensor.raw
    reply = handle_evaluate(REGISTRY, request)
    assert reply.loss_name == loss
    assert not reply.loss.raw  # the reply follows the request's values encoding


def test_example_values_are_exact_and_ints_are_ints() -> None:
    request = example_request(REGISTRY.get("cross_entropy"))
    assert request["inputs"]["input"] == {"dtype": "float32", "shape": [2, 3], "values": [10, 0, -10, 8, 8, 8]}
    assert request["inputs"]["target"] == {"dtype": "int64", "shape": [2], "values": [0, 2]}
    assert all(type(v) is int for v in request["inputs"]["target"]["values"])


def _toy_registry() -> Registry:
    registry = Registry()

    @register_loss(
        "toy_loss",
        aliases=("ToyLoss", "toy"),
        inputs=(
            Input("input", "prediction", differentiable=True, aliases=("y_pred",), doc="any | shape"),
            Input("target", "target", kind="float|int", aliases=("y_true",)),
            Input("weight", "weight", required=False, doc="per-element\nweight"),
        ),
        params=(
            REDUCTION,
            Param("margin", "float", 1, "The margin.", min=0.0, min_exclusive=True),
            Param("swap", "bool", False, "Swap."),
            Param("eps", "float", None, "Optional epsilon.", nullable=True),
            Param("sizes", "int_list", (2, 4), "Sizes."),
        ),
        description="A toy loss.",
        source="tests",
        notes="float16 is slow.",
        float_dtypes=("float32", "float64"),
        example=lambda dt: {
            "input": torch.tensor([0.1, 1.0 / 3, float("inf")], dtype=dt),
            "target": torch.tensor([1, 2, 3]),
            "params": {"margin": 0.5, "sizes": (1, 2)},
        },
        registry=registry,
    )
    def toy_loss(input, target, weight, *, reduction, margin, swap, eps, sizes):  # type: ignore[no-untyped-def]
        return (input - target).sum()

    return registry


def test_render_of_a_toy_registry() -> None:
    text = render_losses_markdown(_toy_registry())
    assert "lossd serves 1 loss. " in text
    assert "| [`toy_loss`](#toy_loss) | `ToyLoss`, `toy` | one by one | A toy loss. |" in text
    assert "- **In a batch:** one by one" in text
    assert "- **Notes:** float16 is slow." in text
    assert "- **Float dtypes:** float32, float64" in text
    # pipes and newlines never break a table row
    assert "| `input` | prediction | `float` | yes | yes | `y_pred` | any \\| shape |" in text
    assert "| `target` | target | `float\\|int` | no | yes | `y_true` | — |" in text
    assert "| `weight` | weight | `float` | no | no | — | per-element weight |" in text
    # params: JSON defaults, ranges, choices
    assert '| `reduction` | `string` | `"mean"` | `"none"`, `"mean"`, `"sum"` |' in text
    assert "| `margin` | `float` | `1.0` | `> 0` | The margin. |" in text
    assert "| `swap` | `bool` | `false` | `true`, `false` | Swap. |" in text
    assert "| `eps` | `float or null` | `null` | any | Optional epsilon. |" in text
    assert "| `sizes` | `int_list` | `[2, 4]` | any | Sizes. |" in text
    # example: shortest float32 text, ints as ints, proto3 JSON for infinities, params as JSON
    assert '"input": {"dtype": "float32", "shape": [3], "values": [0.1, 0.33333334, "Infinity"]}' in text
    assert '"target": {"dtype": "int64", "shape": [3], "values": [1, 2, 3]}' in text
    assert '"params": {"margin": 0.5, "sizes": [1, 2]}' in text
    assert text.endswith("EOF\n```\n")


def test_the_vectorized_losses_say_so() -> None:
    """docs/losses.md names the losses a batch vectorizes: those registered vectorized (the ones
    tests/unit/test_vectorized.py proves bit-identical)."""
    text = render_losses_markdown()
    for spec in REGISTRY:
        assert f"- **In a batch:** {'vectorized' if spec.vectorized else 'one by one'}" in text.split(
            f"## {spec.name}\n")[1], spec.name
    assert {s.name for s in REGISTRY if s.vectorized} == {"mse_loss", "l1_loss"}


def test_toy_example_parses_as_proto_json() -> None:
    spec = next(iter(_toy_registry()))
    request = json_format.Parse(example_request_json(spec), lossd_pb2.EvaluateLossRequest())
    assert list(request.inputs["input"].values)[2] == float("inf")
    assert request.inputs["input"].values[0] == pytest.approx(0.1)
    assert torch.tensor(list(request.inputs["input"].values)).to(torch.float32)[1] == torch.tensor(1.0 / 3)


def test_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "losses.md"
    assert main(["--check", "--out", str(out)]) == 1  # missing
    assert "run `make docs`" in capsys.readouterr().err
    assert main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render_losses_markdown(REGISTRY)
    assert main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8") + "edited\n", encoding="utf-8")
    assert main(["--check", "--out", str(out)]) == 1


def test_stdout_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", "-"]) == 0
    assert capsys.readouterr().out == render_losses_markdown(REGISTRY)
