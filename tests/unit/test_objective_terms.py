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


def test_one_request_input_may_feed_two_inputs_of_a_term() -> None:
    """A term's map may route one request input to two of its loss's inputs (``l1_loss(x, x)``): the
    plan was keyed by the request input, so one entry overwrote the other, and which loss was computed
    (``l1(x, target)`` or ``l1(input, x)``) depended on the map's order in the process."""
    x, a, b = (randn(5, dtype=torch.float64, seed=s) for s in (4, 5, 6))
    for order in (("input", "target"), ("target", "input")):
        term = Term("l1_loss", inputs={k: "x" for k in order}, name="same")
        r = evaluate_objective(REGISTRY, [term, Term("mse_loss", name="pair")], {"x": x, "input": a, "target": b})
        leaves = {k: t.clone().requires_grad_() for k, t in {"x": x, "input": a, "target": b}.items()}
        expected = torch.nn.functional.l1_loss(leaves["x"], leaves["x"]) + torch.nn.functional.mse_loss(
            leaves["input"], leaves["target"])
        grads = torch.autograd.grad(expected, list(leaves.values()))
        assert r.loss.item() == expected.item() and r.parts["same"] == 0.0, (order, r.parts)
        for k, g in zip(leaves, grads):
            assert torch.equal(r.grads[k], g), k


def test_a_refusal_inside_a_terms_loss_names_the_term_and_the_request_input() -> None:
    bad = randint(5, 2, 4, 4, seed=7)  # class 4 of 3
    with pytest.raises(LossError) as err:
        evaluate_objective(REGISTRY, [Term("dice_loss", params=MONAI_DICE),
                                      Term("cross_entropy", inputs={"target": "bad"})],
                           {"input": X, "target": Y, "bad": bad})
    assert err.value.field == "inputs.bad", str(err.value)
    assert err.value.message.startswith("terms[1] (cross_entropy, as its target): class indices must lie in"), \
        err.value.message


@pytest.mark.parametrize("name", ["loss", "l1", "l2"])
def test_a_term_may_not_take_the_name_of_an_objective_part(name: str) -> None:
    """The parts name the data loss and the penalties so: a term called l2 was overwritten by the penalty."""
    with pytest.raises(LossError) as err:
        evaluate_objective(REGISTRY, [Term("cross_entropy", name=name), Term("dice_loss", params=MONAI_DICE)],
                           {"input": X, "target": Y})
    assert err.value.field == "terms[0].name" and "is reserved" in err.value.message, str(err.value)
