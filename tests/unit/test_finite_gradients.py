"""No NaN or infinite gradient from a finite loss, for every loss lossd defines (not torch's own),
at the points where losses are known to break: a perfect prediction, saturated logits, all-zero
and all-equal predictions, and predictions scaled far out (float64, each loss's own example).

Issue #16: the focal and Tversky losses returned NaN gradients on perfect predictions with a
fractional gamma (``0 ** gamma`` has an infinite slope); a new loss must not bring that back. A
variant a loss refuses (a rule of its domain) is skipped: it is not computed at all.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lossd._wire import FieldError
from lossd.server import evaluate
from lossd.server.losses import REGISTRY, LossSpec

#: Where the loss is not differentiable, so a non-finite gradient is no defect: (loss, variant, input).
#: None today. binary_focal_loss's target at probabilities of exactly 0 or 1 ("perfect", "zeros") was listed:
#: torch's binary_cross_entropy gives it -logit(p), ±inf, and times the focal factor 0 NaN; but the value is
#: computed with log p and log(1 - p) clamped at -100, whose derivative is finite (0 at a perfect prediction).
TRUE_DERIVATIVE: set[tuple[str, str, str]] = set()


def _defined_by_lossd(spec: LossSpec) -> bool:
    return not spec.source.startswith("torch.")


def _variants(spec: LossSpec) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    example = dict(spec.example(torch.float64))
    params = dict(example.pop("params", None) or {})
    roles = {i.name: i.role for i in spec.inputs}
    pred = next((n for n, t in example.items() if roles.get(n) == "prediction" and isinstance(t, torch.Tensor)
                 and t.is_floating_point()), None)
    out = {"example": (example, params)}
    if pred is None:
        return out
    p = example[pred]
    target = next((t for n, t in example.items() if roles.get(n) == "target" and isinstance(t, torch.Tensor)
                   and t.is_floating_point() and t.shape == p.shape), None)
    if target is not None:
        out["perfect"] = ({**example, pred: target.clone()}, params)
        out["saturated"] = ({**example, pred: (target * 2 - 1) * 60.0}, params)
    out["zeros"] = ({**example, pred: torch.zeros_like(p)}, params)
    out["ties"] = ({**example, pred: torch.full_like(p, 0.5)}, params)
    out["far"] = ({**example, pred: p * 1000.0}, params)
    return out


CASES = [pytest.param(spec.name, variant, id=f"{spec.name}-{variant}")
         for spec in REGISTRY if _defined_by_lossd(spec) for variant in _variants(spec)]


def test_the_sweep_covers_the_losses_lossd_defines() -> None:
    names = {p.values[0] for p in CASES}
    assert {"dice_loss", "tversky_loss", "sigmoid_focal_loss", "lovasz_hinge_loss"} <= names
    assert "mse_loss" not in names and "cross_entropy" not in names  # torch's own are torch's business


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_a_finite_loss_has_finite_gradients(name: str, variant: str) -> None:
    spec = REGISTRY.get(name)
    tensors, params = _variants(spec)[variant]
    try:
        result = evaluate(REGISTRY, name, tensors, params)
    except FieldError:
        return  # refused by a rule of the loss: nothing computed
    if not bool(torch.isfinite(result.loss).all()):
        return  # a non-finite loss may have non-finite gradients
    bad = sorted(n for n, g in result.grads.items()
                 if not bool(torch.isfinite(g).all()) and (name, variant, n) not in TRUE_DERIVATIVE)
    assert not bad, f"{name} ({variant}): non-finite gradient of {bad} from the finite loss {result.loss}"
