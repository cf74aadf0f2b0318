"""Composite objectives and L1/L2 regularization through a real server."""

from __future__ import annotations

import warnings

import grpc
import pytest
import torch
import torch.nn.functional as F

from lossd.client import InvalidArgument, NotFound, build_request
from lossd.v1 import lossd_pb2_grpc

X = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], dtype=torch.float64)
Y = torch.tensor([[1.0, -1.0, 0.0], [2.0, 0.5, -2.0]], dtype=torch.float64)


def test_weighted_sum_of_losses_matches_local_torch(client):
    r = client.evaluate([{"loss": "mse", "weight": 0.3},
                        {"loss": "huber_loss", "weight": 0.7, "params": {"delta": 0.5}}], X, Y)
    x = X.clone().requires_grad_()
    mse, huber = F.mse_loss(x, Y), F.huber_loss(x, Y, delta=0.5)
    total = 0.3 * mse + 0.7 * huber
    (gx,) = torch.autograd.grad(total, x)
    assert r.value == total.item()
    assert r.parts == {"mse_loss": mse.item(), "huber_loss": huber.item()}
    assert torch.equal(r.grads["y_pred"], gx)
    assert r.loss_name == "mse_loss+huber_loss"


def test_composite_bce_plus_dice(client):
    logits = torch.tensor([[1.5, -0.5, 0.2, -2.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    r = client.evaluate([{"loss": "bce_with_logits", "weight": 0.5}, {"loss": "dice_loss", "weight": 0.5}],
                        logits, mask)
    bce = F.binary_cross_entropy_with_logits(logits, mask)
    p = torch.sigmoid(logits)
    dice = 1 - 2 * (p * mask).sum() / (p.sum() + mask.sum())
    assert r.parts["binary_cross_entropy_with_logits"] == pytest.approx(bce.item(), rel=1e-6)
    assert r.parts["dice_loss"] == pytest.approx(dice.item(), rel=1e-6)
    assert r.value == pytest.approx(0.5 * bce.item() + 0.5 * dice.item(), rel=1e-6)
    assert set(r.grads) == {"y_pred", "y_true"}  # bce's target is differentiable, so y_true gets one


def test_one_weighted_term_keeps_its_unweighted_part(client):
    """One term is a composite objective too: `parts` has its own value (it came back empty, and a weighted
    term's unweighted value was lost); the value and gradients are torch's, bit for bit."""
    x = X.clone().requires_grad_()
    mse = F.mse_loss(x, Y)
    (g,) = torch.autograd.grad(2.0 * mse, x)
    r = client.evaluate([{"loss": "mse", "weight": 2.0}], X, Y)
    assert r.parts == {"mse_loss": mse.item()} and r.value == (2.0 * mse).item()
    assert torch.equal(torch.as_tensor(r.grads["y_pred"]), g)
    plain = client.evaluate("mse", X, Y, parameters={"w": torch.ones(2, 2, dtype=torch.float64)},
                            regularization={"l2": 0.5})
    assert plain.parts == {"loss": mse.item(), "l2": 1.0}  # a loss named by `loss` has no part of its own


def test_same_loss_twice_gets_numbered_parts(client):
    r = client.evaluate([{"loss": "mse"}, {"loss": "mse", "params": {"reduction": "sum"}}], X, Y)
    assert set(r.parts) == {"mse_loss", "mse_loss#2"}


def _model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()


def test_regularization_parts_and_parameter_grads(client):
    model = _model()
    params = {n: p.detach() for n, p in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # lossd's own arithmetic sends the caller no warning
        r = client.evaluate("mse", X[:, :1], Y[:, :1], parameters=params, regularization={"l1": 0.01, "l2": 0.1})
    assert r.warnings == []
    weights = ["0.weight", "2.weight"]
    assert r.regularized == weights  # biases and 1-d tensors are left out by default
    l1 = 0.01 * sum(params[n].abs().sum() for n in weights)
    l2 = 0.5 * 0.1 * sum(params[n].pow(2).sum() for n in weights)
    data = F.mse_loss(X[:, :1], Y[:, :1])
    assert r.parts["loss"] == data.item()
    assert r.parts["l1"] == pytest.approx(l1.item(), rel=1e-12) and r.parts["l2"] == pytest.approx(l2.item(), rel=1e-12)
    assert r.value == pytest.approx((data + l1 + l2).item(), rel=1e-12)
    for n, p in params.items():
        expected = 0.01 * torch.sign(p) + 0.1 * p if n in weights else torch.zeros_like(p)
        torch.testing.assert_close(r.parameter_grads[n], expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("reg", "covered"), [
    ({"l2": 1.0, "include": ["*"]}, ["0.bias", "0.weight", "2.bias", "2.weight"]),
    ({"l2": 1.0, "exclude": ["2.*"]}, ["0.bias", "0.weight"]),
    ({"l2": 1.0, "include": ["*.weight", "0.bias"], "exclude": ["2.*"]}, ["0.bias", "0.weight"]),
])
def test_regularization_patterns(client, reg, covered):
    params = {n: p.detach() for n, p in _model().named_parameters()}
    r = client.evaluate("mse", X[:, :1], Y[:, :1], parameters=params, regularization=reg)
    assert r.regularized == covered


def test_one_sgd_step_with_weight_decay_equals_step_on_l2_objective(client):
    """SGD(weight_decay=λ) on the weights == SGD on loss + ½λΣθ² over the weights (seed's convention)."""
    lam, lr = 0.05, 0.1
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.randn(8, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    local = _model()
    weights = [p for n, p in local.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in local.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD([{"params": weights, "weight_decay": lam}, {"params": biases, "weight_decay": 0.0}], lr=lr)
    F.mse_loss(local(x), y).backward()
    opt.step()

    remote = _model()
    y_pred = remote(x)
    params = {n: p.detach() for n, p in remote.named_parameters()}
    r = client.evaluate("mse", y_pred.detach(), y, parameters=params, regularization={"l2": lam}, grad_inputs=["y_pred"])
    y_pred.backward(r.grads["y_pred"])  # data-loss gradient flows through the local model
    with torch.no_grad():
        for n, p in remote.named_parameters():
            p -= lr * (p.grad + r.parameter_grads[n])
    for (n, a), (_, b) in zip(local.named_parameters(), remote.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15, msg=n)


@pytest.mark.parametrize(("kwargs", "error", "field"), [
    ({"loss": [{"loss": "mse"}, {"loss": "nope"}]}, NotFound, "terms[1].loss"),
    ({"loss": [{"loss": "mse"}, {"loss": "mse", "params": {"reduction": "none"}}]}, InvalidArgument,
     "terms[1].params.reduction"),
    ({"loss": [{"loss": "mse"}, {"loss": "l1_loss", "params": {"beta": 1}}]}, InvalidArgument,
     "terms[1].params.beta"),
    ({"loss": [{"loss": "mse", "name": "a"}, {"loss": "l1_loss", "name": "a"}]}, InvalidArgument, "terms[1].name"),
    ({"loss": [{"loss": "mse", "weight": float("nan")}]}, InvalidArgument, "terms[0].weight"),
    # one term is still a term: the request has no top-level params (it was taken for a plain request)
    ({"loss": [{"loss": "mse", "params": {"reduction": "none"}}]}, InvalidArgument, "terms[0].params.reduction"),
    ({"loss": "mse", "params": {"reduction": "none"}, "parameters": {"w": torch.ones(2, 2)}}, InvalidArgument,
     "params.reduction"),
    ({"loss": "mse", "regularization": {"l1": -1.0}, "parameters": {"w": torch.ones(2, 2)}}, InvalidArgument,
     "regularization.l1"),
    ({"loss": "mse", "regularization": {"l2": 1.0}}, InvalidArgument, "parameters"),
    ({"loss": "mse", "regularization": {"l2": 1.0}, "parameters": {"w": torch.ones(2, 2, dtype=torch.long)}},
     InvalidArgument, "parameters.w"),
    ({"loss": "mse", "regularization": {"l2": 1.0}, "parameters": {"b": torch.ones(2)}}, InvalidArgument,
     "regularization"),  # the default rule skips 1-d tensors: no include or exclude to name
    ({"loss": "mse", "regularization": {"l2": 1.0, "include": ["w*"]}, "parameters": {"b": torch.ones(2, 2)}},
     InvalidArgument, "regularization.include"),
    ({"loss": "mse", "regularization": {"l2": 1.0, "exclude": ["*"]}, "parameters": {"b": torch.ones(2, 2)}},
     InvalidArgument, "regularization.exclude"),
    ({"loss": [{"loss": "mse", "name": "l2"}]}, InvalidArgument, "terms[0].name"),
    ({"loss": "mse", "parameters": {"w": torch.ones(2)}, "grad_output": torch.ones(2, 3)}, InvalidArgument,
     "grad_output"),
    # 16 KiB of glob patterns in all, refused before any is compiled (crafted ones cost ~10 ms each)
    ({"loss": "mse", "regularization": {"l2": 1.0, "include": ["w*"] + ["*a" * 512] * 15,
                                        "exclude": ["*b" * 512]}, "parameters": {"w": torch.ones(2, 2)}},
     InvalidArgument, "regularization.exclude[0]"),
])
def test_objective_errors_name_the_field(client, kwargs, error, field):
    loss = kwargs.pop("loss")
    with pytest.raises(error) as err:
        client.evaluate(loss, X, Y, **kwargs)
    assert err.value.message.startswith(field + ":"), err.value.message


def test_input_no_term_uses_is_refused(client):
    with pytest.raises(InvalidArgument, match="inputs.var: no term uses"):
        client.evaluate([{"loss": "mse"}, {"loss": "l1_loss"}], X, Y, var=torch.ones(2, 3, dtype=torch.float64))


def test_loss_and_terms_together_are_refused(server_address):
    request, _ = build_request([{"loss": "mse"}], X, Y)
    request.loss = "mse"
    with grpc.insecure_channel(server_address) as ch:
        with pytest.raises(grpc.RpcError) as err:
            lossd_pb2_grpc.LossServiceStub(ch).EvaluateLoss(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("terms: set either loss/params or terms")


def test_terms_with_their_own_inputs_and_transforms_over_grpc(client):
    """MONAI's DiceFocal with a class-index target: the focal term one-hot encodes it (issue 16)."""
    logits = torch.tensor([[[1.5, -0.5, 0.2], [0.1, 2.0, -1.0], [-0.3, 0.4, 0.9]]], dtype=torch.float64)
    labels = torch.tensor([[0, 1, 2]])
    r = client.evaluate([{"loss": "dice_loss", "params": {"mode": "multiclass"}},
                         {"loss": "sigmoid_focal_loss", "transforms": {"target": "one_hot"}, "inputs": {"target": "labels"}}],
                        inputs={"input": logits, "labels": labels, "target": labels})
    onehot = F.one_hot(labels, 3).movedim(-1, 1).double()
    x = logits.clone().requires_grad_()
    p = torch.softmax(x, 1)
    dice = (1 - 2 * (p * onehot).sum((0, 2)) / (p + onehot).sum((0, 2))).mean()
    ce = F.binary_cross_entropy_with_logits(x, onehot, reduction="none")
    q = torch.sigmoid(x) * (1 - onehot) + (1 - torch.sigmoid(x)) * onehot
    focal = ((0.25 * onehot + 0.75 * (1 - onehot)) * q ** 2 * ce).mean()
    (g,) = torch.autograd.grad(dice + focal, x)
    assert r.value == pytest.approx((dice + focal).item(), rel=1e-12)
    torch.testing.assert_close(r.grads["input"], g)


def _objective_request(dtype: torch.dtype = torch.float32) -> tuple[list[dict], dict[str, torch.Tensor], dict]:
    """Weighted terms plus L1 and L2 over a model's parameters (the default rule covers the weights)."""
    model = _model().to(dtype)
    terms = [{"loss": "mse", "weight": 0.3}, {"loss": "smooth_l1_loss", "weight": 0.7, "params": {"beta": 0.5}}]
    return terms, {n: p.detach() for n, p in model.named_parameters()}, {"l1": 1e-3, "l2": 0.37}


def _local_objective(x: torch.Tensor, y: torch.Tensor, params: dict[str, torch.Tensor]
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective as the server computes it, and its parts: weight * loss per term, then l1, then l2, summed
    tensor by tensor over the covered parameters in the order of their names."""
    covered = [params[n] for n in sorted(params) if n.endswith("weight")]
    mse, smooth = F.mse_loss(x, y), F.smooth_l1_loss(x, y, beta=0.5)
    data = 0.3 * mse + 0.7 * smooth
    l1 = 1e-3 * sum(p.abs().sum() for p in covered)
    l2 = 0.5 * 0.37 * sum(p.pow(2).sum() for p in covered)
    parts = {"mse_loss": mse, "smooth_l1_loss": smooth, "loss": data, "l1": l1, "l2": l2}
    return data + l1 + l2, {k: v.item() for k, v in parts.items()}


@pytest.mark.parametrize("grad_output", [None, 1.0, 3.0, 1 / 3, -0.1])
def test_an_objective_takes_grad_output_as_torchs_backward_does(client, grad_output):
    """``grad_output`` (shape []) is backpropagated through each weighted term and penalty, as
    ``torch.autograd.grad(objective, leaves, grad_output)`` does: the gradients are torch's to the bit (the server
    refused it, and the SDK multiplied the gradients for 1 by it, which rounds differently). The value and the parts
    stay the objective's; without grad_output the reply is as before: the gradients of the objective itself."""
    terms, params, reg = _objective_request()
    x, y = X.float(), Y.float()
    sent = {} if grad_output is None else {"grad_output": torch.tensor(grad_output)}
    r = client.evaluate(terms, x, y, parameters=params, regularization=reg, **sent)
    xl = x.clone().requires_grad_()
    local = {n: p.clone().requires_grad_() for n, p in params.items()}
    objective, parts = _local_objective(xl, y, local)
    upstream = None if grad_output is None else torch.tensor(grad_output)
    # materialize_grads: zeros for the parameters the penalties do not cover (the biases), as the server sends
    gx, *gp = torch.autograd.grad(objective, [xl, *local.values()], upstream, materialize_grads=True)
    assert (r.value, r.parts) == (objective.item(), parts)
    assert torch.equal(torch.as_tensor(r.grads["y_pred"]), gx)
    for name, g in zip(local, gp):
        assert torch.equal(torch.as_tensor(r.parameter_grads[name]), g), name
    if grad_output in (None, 1.0):  # an explicit 1 is no grad_output
        other = client.evaluate(terms, x, y, parameters=params, regularization=reg,
                                **({} if grad_output else {"grad_output": torch.tensor(1.0)}))
        assert (other.value, other.parts) == (r.value, r.parts)
        assert all(torch.equal(torch.as_tensor(other.grads[n]), torch.as_tensor(r.grads[n])) for n in r.grads)
        assert all(torch.equal(torch.as_tensor(other.parameter_grads[n]), torch.as_tensor(r.parameter_grads[n]))
                   for n in r.parameter_grads)


def test_an_objectives_grad_output_of_another_dtype_is_cast_as_torch_casts_it(client):
    """A float32 grad_output for a float64 objective: torch's backward casts it to the objective's dtype."""
    terms, params, reg = _objective_request(torch.float64)
    go = torch.tensor(0.3, dtype=torch.float32)
    r = client.evaluate(terms, X, Y, parameters=params, regularization=reg, grad_output=go)
    xl = X.clone().requires_grad_()
    local = {n: p.clone().requires_grad_() for n, p in params.items()}
    gx, *gp = torch.autograd.grad(_local_objective(xl, Y, local)[0], [xl, *local.values()], go,
                                  materialize_grads=True)
    assert torch.equal(torch.as_tensor(r.grads["y_pred"]), gx)
    assert all(torch.equal(torch.as_tensor(r.parameter_grads[n]), g) for n, g in zip(local, gp))


@pytest.mark.parametrize("objective", ["terms", "regularized"])
@pytest.mark.parametrize(("grad_output", "message"), [
    (torch.tensor([0.5, 2.0]), "grad_output: has shape [2]; an objective is a scalar (shape [])"),
    (torch.tensor([3.0]), "grad_output: has shape [1]; an objective is a scalar (shape [])"),  # as torch refuses
    (torch.ones(2, 3), "grad_output: has shape [2, 3]; an objective is a scalar (shape [])"),
    (torch.tensor(3), "grad_output: must have a floating-point dtype (an objective is real), got int64"),
    (torch.tensor(True), "grad_output: must have a floating-point dtype (an objective is real), got bool"),
    (torch.tensor(1 + 0j), "grad_output: must have a floating-point dtype (an objective is real), got complex64"),
    (torch.tensor(float("nan")), "grad_output: contains NaN at flat index 0 (the first non-finite value)"),
    (torch.tensor(float("-inf")), "grad_output: contains -Inf at flat index 0 (the first non-finite value)"),
])
def test_an_objectives_grad_output_is_refused_naming_it(client, objective, grad_output, message):
    terms, params, reg = _objective_request(torch.float64)
    loss = terms if objective == "terms" else "mse"
    with pytest.raises(InvalidArgument) as err:
        client.evaluate(loss, X, Y, parameters=params, regularization=reg, grad_output=grad_output)
    assert err.value.field == "grad_output" and err.value.message.startswith(message), err.value.message


def test_an_objectives_non_finite_grad_output_is_computed_when_allowed(client):
    """With allow_non_finite, a NaN grad_output gives what torch gives: NaN gradients, the value unchanged."""
    terms, params, reg = _objective_request(torch.float64)
    r = client.evaluate(terms, X, Y, parameters=params, regularization=reg, grad_output=torch.tensor(float("nan")),
                        allow_non_finite=True)
    local = {n: p.clone() for n, p in params.items()}
    assert r.value == _local_objective(X, Y, local)[0].item()
    assert torch.isnan(torch.as_tensor(r.grads["y_pred"])).all()
    for n in params:  # the uncovered biases get zeros, as before
        g = torch.as_tensor(r.parameter_grads[n])
        assert bool(torch.isnan(g).all() if n.endswith("weight") else (g == 0).all()), n


@pytest.mark.parametrize("grad_output", [None, torch.tensor(1.0)], ids=["no-grad-output", "grad-output"])
@pytest.mark.parametrize("objective", ["terms", "regularized"])
def test_a_complex_valued_objective_is_refused_naming_the_term(client, server_address, objective, grad_output):
    """poisson_nll_loss of complex inputs is complex: with a real grad_output the backward ran (torch itself
    refuses that pair) and the complex part reached a map of doubles: INTERNAL (an audit, 2026-12-06)."""
    x = torch.tensor([1 + 2j, 0.5 - 1j], dtype=torch.complex64)
    y = torch.tensor([1 + 0j, 2 + 0j], dtype=torch.complex64)
    kwargs = {"grad_output": grad_output} if grad_output is not None else {}
    if objective == "terms":
        loss, field = [{"loss": "poisson_nll_loss"}], "terms[0]"
    else:
        loss, field = "poisson_nll_loss", "inputs"
        kwargs.update(parameters={"w": torch.ones(2, 2)}, regularization={"l2": 0.5})
    with pytest.raises(InvalidArgument) as err:
        client.evaluate(loss, x, y, **kwargs)
    assert err.value.field == field, err.value.message
    assert "poisson_nll_loss gives a complex value; an objective is a real number" in err.value.message
    outcome, = client.evaluate_many([{"loss": loss, "y_pred": x, "y_true": y, **kwargs}])  # a batch item's own
    assert isinstance(outcome, InvalidArgument) and outcome.field == field, outcome
