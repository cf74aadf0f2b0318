"""Terms of a composite objective that read their own inputs or transform them (issue 16):
MONAI's DiceCE and DiceFocal with a class-index target, as one request."""

from __future__ import annotations

import pytest
import torch

from lossd.server.evaluation import evaluate_objective
from lossd.server.evaluation._objective import Term
from lossd.server.losses import REGISTRY, LossError
from support.parity import randint, randn

MONAI_DICE = {"mode": "multiclass", "aggregation": "per_sample", "smooth_nr": 1e-5, "smooth_dr": 1e-5, "eps": 0.0}
X = randn(2, 3, 4, 4, dtype=torch.float64, seed=1)
Y = randint(3, 2, 4, 4, seed=2)


def _monai_value_and_grad(loss):
    x = X.clone().requires_grad_()
    out = loss(x, Y.unsqueeze(1))
    (g,) = torch.autograd.grad(out, x)
    return out.detach(), g


def test_dice_ce_is_monai_dice_ce_loss() -> None:
    monai = pytest.importorskip("monai.losses")
    expected, grad = _monai_value_and_grad(monai.DiceCELoss(softmax=True, to_onehot_y=True, lambda_dice=0.7, lambda_ce=0.3))
    r = evaluate_objective(REGISTRY, [Term("dice_loss", 0.7, MONAI_DICE), Term("cross_entropy", 0.3)],
                           {"input": X, "target": Y})
    torch.testing.assert_close(r.loss, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(r.grads["input"], grad, rtol=1e-9, atol=1e-9)


def test_dice_focal_reads_a_one_hot_target() -> None:
    monai = pytest.importorskip("monai.losses")
    expected, grad = _monai_value_and_grad(monai.DiceFocalLoss(softmax=True, to_onehot_y=True, gamma=2.0))
    focal = Term("sigmoid_focal_loss", params={"alpha": -1.0, "focal_form": "logit"}, transforms={"target": "one_hot"})
    r = evaluate_objective(REGISTRY, [Term("dice_loss", params=MONAI_DICE), focal], {"input": X, "target": Y})
    torch.testing.assert_close(r.loss, expected, rtol=2e-6, atol=2e-6)  # MONAI's focal term is float32
    torch.testing.assert_close(r.grads["input"], grad, rtol=2e-6, atol=2e-6)


def test_a_term_reads_its_own_inputs_and_transforms_the_prediction() -> None:
    probs_target = torch.softmax(randn(2, 3, 4, 4, dtype=torch.float64, seed=3), 1)
    terms = [Term("cross_entropy"),
             Term("kl_div", params={"reduction": "batchmean"}, inputs={"target": "soft"},
                  transforms={"input": "log_softmax"})]
    r = evaluate_objective(REGISTRY, terms, {"input": X, "target": Y, "soft": probs_target})
    x = X.clone().requires_grad_()
    expected = torch.nn.functional.cross_entropy(x, Y) + torch.nn.functional.kl_div(
        torch.log_softmax(x, 1), probs_target, reduction="batchmean")
    (g,) = torch.autograd.grad(expected, x)
    torch.testing.assert_close(r.loss, expected.detach())
    torch.testing.assert_close(r.grads["input"], g)
    assert set(r.grads) == {"input", "soft"}


def test_smp_multiclass_focal_is_one_term_with_a_one_hot_target() -> None:
    """smp / pytorch-toolbelt FocalLoss(mode='multiclass'): a sigmoid focal per class on the one-hot target,
    each class's mean summed; the term's weight is the class count (docs/objectives.md)."""
    from support.refs.libraries import smp_focal

    x = X.clone().requires_grad_()
    expected = sum(smp_focal(x[:, c], (Y == c).to(X.dtype), alpha=0.25) for c in range(3))
    (g,) = torch.autograd.grad(expected, x)
    term = Term("sigmoid_focal_loss", 3.0, {"focal_form": "exp_bce"}, transforms={"target": "one_hot"})
    r = evaluate_objective(REGISTRY, [term], {"input": X, "target": Y})
    torch.testing.assert_close(r.loss, expected.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r.grads["input"], g, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("term", "field", "rule"), [
    (Term("dice_loss", inputs={"label": "target"}), "terms[1].inputs.label", "no input called"),
    (Term("dice_loss", inputs={"target": "nope"}), "terms[1].inputs.target", "does not send"),
    (Term("dice_loss", transforms={"target": "square"}), "terms[1].transforms.target", "one of"),
    (Term("sigmoid_focal_loss", transforms={"input": "one_hot"}), "terms[1].transforms.input", "integer class indices"),
])
def test_term_input_rules_name_the_field(term: Term, field: str, rule: str) -> None:
    with pytest.raises(LossError) as err:
        evaluate_objective(REGISTRY, [Term("cross_entropy"), term], {"input": X, "target": Y})
    assert err.value.field == field and rule in err.value.message, str(err.value)
