"""Terms of a composite objective that read their own inputs or transform them (issue 16):
MONAI's DiceCE and DiceFocal with a class-index target, as one request."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lossd.client import build_request
from lossd.client._codec import decode
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


def _through_the_rpc_layer(loss, *args, **kwargs):
    """The request the SDK sends for ``loss`` (a name or terms), served by the RPC layer (no server)."""
    from lossd.server.rpc._request import handle_evaluate

    request, _ = build_request(loss, *args, **kwargs)
    return handle_evaluate(REGISTRY, request)


A = torch.tensor([1.0, 3.0], dtype=torch.float64)
B = torch.tensor([0.0, 0.0], dtype=torch.float64)


@pytest.mark.parametrize("weight", [1.0, 2.0])
def test_one_term_has_its_own_unweighted_part(weight: float) -> None:
    """A request with one term was taken for a plain one (a loss name): its `parts` came back empty, and a
    weighted term's own value was lost. The value and the gradients are torch's, bit for bit, as before."""
    reply = _through_the_rpc_layer([{"loss": "mse", "weight": weight}], A, B)
    x = A.clone().requires_grad_()
    mse = F.mse_loss(x, B)
    expected = mse if weight == 1.0 else weight * mse
    (g,) = torch.autograd.grad(expected, x)
    assert dict(reply.parts) == {"mse_loss": mse.item()}
    assert reply.value == expected.item()
    assert torch.equal(decode(reply.grads["y_pred"], as_torch=True), g)


def test_one_term_with_regularization_has_its_part_and_the_loss_part() -> None:
    w = torch.tensor([[2.0]], dtype=torch.float64)
    reply = _through_the_rpc_layer([{"loss": "mse", "weight": 2.0}], A, B, parameters={"fc.weight": w},
                                   regularization={"l2": 0.5})
    assert dict(reply.parts) == {"mse_loss": 5.0, "loss": 10.0, "l2": 1.0}
    assert reply.value == 11.0


def test_a_plain_regularized_loss_has_no_part_of_its_own() -> None:
    """A loss named by `loss` (not a term): its value is the `loss` part, as before."""
    w = torch.tensor([[2.0]], dtype=torch.float64)
    reply = _through_the_rpc_layer("mse", A, B, parameters={"fc.weight": w}, regularization={"l2": 0.5})
    assert dict(reply.parts) == {"loss": 5.0, "l2": 1.0} and reply.value == 6.0


@pytest.mark.parametrize(("term", "field"), [
    ({"loss": "mse", "params": {"reduction": "none"}}, "terms[0].params.reduction"),
    ({"loss": "mse", "params": {"beta": 1}}, "terms[0].params.beta"),
    ({"loss": "mse", "transforms": {"y_pred": "one_hot"}}, "terms[0].transforms.y_pred"),
])
def test_a_one_term_refusal_names_the_term(term: dict, field: str) -> None:
    """The request has no top-level `params`: a refusal of its one term names `terms[0]`, as for several terms."""
    with pytest.raises(LossError) as err:
        _through_the_rpc_layer([term], A, B, regularization=None)
    assert err.value.field == field, str(err.value)


def test_a_refusal_inside_a_lone_terms_loss_names_the_term_and_the_request_input() -> None:
    with pytest.raises(LossError) as err:
        _through_the_rpc_layer([{"loss": "cross_entropy"}], inputs={"input": X, "target": randint(5, 2, 4, 4, seed=7)})
    assert err.value.field == "inputs.target", str(err.value)
    assert err.value.message.startswith("terms[0] (cross_entropy, as its target): class indices must lie in"), \
        err.value.message


@pytest.mark.parametrize(("params", "field"), [({"reduction": "none"}, "params.reduction"),
                                               ({"beta": 1}, "params.beta")])
def test_a_plain_regularized_loss_refusal_names_the_requests_params(params: dict, field: str) -> None:
    with pytest.raises(LossError) as err:
        _through_the_rpc_layer("mse", A, B, params=params, parameters={"w": torch.ones(2, 2, dtype=torch.float64)})
    assert err.value.field == field, str(err.value)


def test_evaluate_objective_takes_terms_unless_told_the_request_was_plain() -> None:
    x = {"input": A, "target": B}
    assert evaluate_objective(REGISTRY, [Term("mse_loss", 2.0)], x).parts == {"mse_loss": 5.0}
    assert evaluate_objective(REGISTRY, [Term("mse_loss")], x, plain=True).parts == {}
    with pytest.raises(LossError) as err:
        evaluate_objective(REGISTRY, [Term("mse_loss", params={"reduction": "none"})], x)
    assert err.value.field == "terms[0].params.reduction"
    with pytest.raises(ValueError, match="one loss"):
        evaluate_objective(REGISTRY, [Term("mse_loss"), Term("l1_loss")], x, plain=True)


def test_every_term_is_bound_before_any_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each term was bound just before its own forward: a bad parameter in the last of 64 terms over 10^6
    elements was refused after 63 forwards (0.8-3 s, +258 MB; an audit, 2026-12-06)."""
    from lossd.server.evaluation import _objective

    forwards: list[str] = []
    real = _objective.call_loss
    monkeypatch.setattr(_objective, "call_loss", lambda spec, *a, **k: forwards.append(spec.name) or real(spec, *a, **k))
    x = {"input": torch.zeros(4), "target": torch.zeros(4)}
    for bad, field in [({"params": {"bogus": 1}}, "terms[3].params.bogus"),
                       ({"params": {"reduction": "avg"}}, "terms[3].params.reduction"),
                       ({"transforms": {"input": "softmax"}}, "terms[3].transforms.input")]:
        terms = [Term("mse_loss")] * 3 + [Term("l1_loss", **bad)]
        with pytest.raises(LossError) as err:
            evaluate_objective(REGISTRY, terms, x)
        assert err.value.field == field, err.value
        assert forwards == [], forwards
    assert float(evaluate_objective(REGISTRY, [Term("mse_loss")] * 2, x).loss) == 0.0 and len(forwards) == 2


@pytest.mark.parametrize(("names", "parts"), [
    (["", "", "mse_loss#2"], ["mse_loss", "mse_loss#3", "mse_loss#2"]),
    (["mse_loss#2", "", ""], ["mse_loss#2", "mse_loss", "mse_loss#3"]),
    (["", "mse_loss"], ["mse_loss#2", "mse_loss"]),
    (["mse_loss", ""], ["mse_loss", "mse_loss#2"]),
])
def test_a_name_a_term_gives_itself_is_kept_whatever_the_order(names: list[str], parts: list[str]) -> None:
    """[mse, mse, l1 named 'mse_loss#2'] was refused as "'mse_loss#2' is used by two terms" (one term named
    it: the second mse had taken it automatically), while the same terms in another order were accepted."""
    x = {"input": torch.tensor([1.0, 3.0]), "target": torch.zeros(2)}
    terms = [Term("l1_loss" if name else "mse_loss", name=name) for name in names]
    r = evaluate_objective(REGISTRY, terms, x)
    assert list(r.parts) == parts


def test_a_name_two_terms_give_themselves_is_refused_naming_both() -> None:
    x = {"input": torch.tensor([1.0, 3.0]), "target": torch.zeros(2)}
    with pytest.raises(LossError) as err:
        evaluate_objective(REGISTRY, [Term("mse_loss", name="a"), Term("l1_loss"), Term("l1_loss", name="a")], x)
    assert err.value.field == "terms[2].name" and "'a' is also the name of terms[0]" in str(err.value)


def test_domain_warnings_name_the_request_input_and_the_term() -> None:
    """The warning named ``inputs.target``, which the request did not send, and two terms' targets read from
    two inputs merged into one warning."""
    a = torch.tensor([0.5, 1.0, -1.0, 2.0])
    x = {"x": torch.zeros(4), "a": a, "b": 3 * a}
    terms = [Term("soft_margin_loss", inputs={"input": "x", "target": "a"}),
             Term("soft_margin_loss", inputs={"input": "x", "target": "b"})]
    r = evaluate_objective(REGISTRY, terms, x)
    assert [w.split(": values")[0] for w in r.warnings] == [
        "inputs.a: terms[0] (soft_margin_loss, as its target)", "inputs.b: terms[1] (soft_margin_loss, as its target)"]
    plain = evaluate_objective(REGISTRY, [Term("soft_margin_loss")], {"input": x["x"], "target": a}, plain=True,
                               parameters={"w": torch.ones(2, 2)})
    assert [w.split(": values")[0] for w in plain.warnings] == ["inputs.target"]  # a plain request's own names


def test_a_plain_regularized_loss_takes_grad_inputs_by_alias() -> None:
    """grad_inputs=['y_pred'] worked for a plain loss and was refused once parameters were added."""
    x = {"input": torch.tensor([1.0, 3.0]), "target": torch.zeros(2)}
    r = evaluate_objective(REGISTRY, [Term("mse_loss")], x, parameters={"w": torch.ones(2, 2)},
                           regularization=None, grad_inputs=["y_pred"], plain=True)
    assert set(r.grads) == {"input"}
    with pytest.raises(LossError) as err:
        evaluate_objective(REGISTRY, [Term("mse_loss")], x, grad_inputs=["y_pred"])  # terms: the request's names
    assert err.value.field == "grad_inputs[0]"
