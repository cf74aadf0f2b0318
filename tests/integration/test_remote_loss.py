"""RemoteLoss / remote_loss: autograd through the server equals local torch autograd.

The parity test trains a small model with ``RemoteLoss("cross_entropy")`` and
with ``nn.CrossEntropyLoss()`` and compares the parameters (float64, 1e-10).
Round trips are counted on a client that counts its EvaluateLoss calls.
"""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossd.client import Client, InvalidArgument
from lossd.client.torch import RemoteLoss, remote_loss

TOL = 1e-10


class CountingClient(Client):
    """A Client that counts its EvaluateLoss calls."""

    calls = 0

    def evaluate_request(self, request, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().evaluate_request(request, **kwargs)


@pytest.fixture()
def counting(server_address: str) -> Iterator[CountingClient]:
    with CountingClient(server_address) as c:
        yield c


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _train(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], steps: int) -> list[float]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (24,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _assert_same_parameters(a: nn.Module, b: nn.Module, tol: float = TOL) -> None:
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(p, q, rtol=0, atol=tol), f"{name}: max diff {(p - q).abs().max().item()}"


def test_training_with_remote_cross_entropy_matches_local(counting: CountingClient) -> None:
    steps = 15
    remote, local = _model(), _model()
    remote_losses = _train(remote, RemoteLoss("cross_entropy", client=counting), steps)
    local_losses = _train(local, nn.CrossEntropyLoss(), steps)
    _assert_same_parameters(remote, local)
    assert remote_losses == pytest.approx(local_losses, rel=0, abs=TOL)
    assert local_losses[-1] < 0.7 * local_losses[0]  # it did learn
    assert counting.calls == steps  # one round trip per forward + backward


def test_loss_parameters_and_constant_tensor_inputs(counting: CountingClient) -> None:
    weight = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    remote, local = _model(), _model()
    _train(remote, RemoteLoss("CrossEntropyLoss", client=counting, weight=weight, label_smoothing=0.1), 5)
    _train(local, nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1), 5)
    _assert_same_parameters(remote, local)


def _xy(*shape: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64),
            torch.randn(*shape, generator=g, dtype=torch.float64))


def test_reduction_none_is_a_vector_jacobian_product(counting: CountingClient) -> None:
    x, t = _xy(4, 3)
    w = torch.rand(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    xr, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = remote_loss("smooth_l1_loss", xr, t, client=counting, params={"reduction": "none", "beta": 0.5})
    assert out.shape == (4, 3) and counting.calls == 1
    (out * w).mean().backward()
    assert counting.calls == 2  # the backward sent grad_output
    (F.smooth_l1_loss(xl, t, reduction="none", beta=0.5) * w).mean().backward()
    assert torch.allclose(xr.grad, xl.grad, rtol=0, atol=TOL)


def test_reduction_none_then_sum_reuses_the_forward_gradients(counting: CountingClient) -> None:
    x, t = _xy(6)
    xr, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
    remote_loss("mse", xr, t, client=counting, params={"reduction": "none"}).sum().backward()
    F.mse_loss(xl, t, reduction="none").sum().backward()
    assert counting.calls == 1
    assert torch.equal(xr.grad, xl.grad)


def test_gradcheck_reduction_none(client: Client) -> None:
    x, t = _xy(2, 3, seed=3)
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: remote_loss("huber_loss", a, t, client=client, params={"reduction": "none"}), (x,)
    )


def test_several_differentiable_inputs(counting: CountingClient) -> None:
    a, b = _xy(5, seed=4)
    target = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0], dtype=torch.float64)
    ar, br, al, bl = (v.clone().requires_grad_() for v in (a, b, a, b))
    remote_loss("margin_ranking_loss", ar, br, client=counting, inputs={"target": target},
                params={"margin": 0.1}).backward(torch.tensor(3.0, dtype=torch.float64))
    F.margin_ranking_loss(al, bl, target, margin=0.1).backward(torch.tensor(3.0, dtype=torch.float64))
    assert torch.allclose(ar.grad, al.grad, rtol=0, atol=TOL)
    assert torch.allclose(br.grad, bl.grad, rtol=0, atol=TOL)
    # Only what requires grad: a frozen second input gets none, and is not asked for.
    x, t = _xy(5, seed=5)
    var = torch.full((5,), 0.5, dtype=torch.float64, requires_grad=True)
    xr = x.clone().requires_grad_()
    remote_loss("gaussian_nll_loss", xr, t, client=counting, inputs={"var": var}).backward()
    xl, vl = x.clone().requires_grad_(), var.detach().clone().requires_grad_()
    F.gaussian_nll_loss(xl, t, vl).backward()
    assert torch.allclose(xr.grad, xl.grad, rtol=0, atol=TOL) and torch.allclose(var.grad, vl.grad, rtol=0, atol=TOL)


def test_composite_objective(counting: CountingClient) -> None:
    x, t = _xy(8, seed=6)
    xr, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
    terms = [{"loss": "mse", "weight": 0.3}, {"loss": "l1_loss", "weight": 0.7}]
    out = RemoteLoss(terms, client=counting)(xr, t)
    out.backward()
    expected = 0.3 * F.mse_loss(xl, t) + 0.7 * F.l1_loss(xl, t)
    expected.backward()
    assert out.item() == pytest.approx(expected.item(), abs=TOL)
    assert torch.allclose(xr.grad, xl.grad, rtol=0, atol=TOL)
    assert counting.calls == 1


def test_regularization_gradients_reach_the_model_parameters(counting: CountingClient) -> None:
    l1, l2 = 1e-3, 1e-2
    remote, local = _model(7), _model(7)
    criterion = RemoteLoss("cross_entropy", client=counting, parameters=remote, regularization={"l1": l1, "l2": l2})
    assert list(criterion.parameters()) == []  # the model is not adopted as a submodule

    def local_objective(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weights = [p for n, p in local.named_parameters() if not n.endswith("bias")]  # the default coverage
        return (F.cross_entropy(out, y) + l1 * sum(p.abs().sum() for p in weights)
                + 0.5 * l2 * sum(p.pow(2).sum() for p in weights))

    remote_losses = _train(remote, criterion, 8)
    local_losses = _train(local, local_objective, 8)
    _assert_same_parameters(remote, local)
    assert remote_losses == pytest.approx(local_losses, rel=0, abs=TOL)


def test_no_grad_forward_and_errors(client: Client) -> None:
    x, t = _xy(3, seed=8)
    with torch.no_grad():
        out = RemoteLoss("mse", client=client)(x, t)
    assert not out.requires_grad and out.item() == pytest.approx(F.mse_loss(x, t).item(), abs=TOL)
    with pytest.raises(InvalidArgument) as err:
        RemoteLoss("mse", client=client, reduction="avg")(x.requires_grad_(), t)
    assert err.value.field == "params.reduction"


def test_float32_and_repr(client: Client) -> None:
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(9), requires_grad=True)
    y = torch.tensor([0, 2, 1, 0])
    criterion = RemoteLoss("ce", client=client, label_smoothing=0.2)
    out = criterion(x, y)
    out.backward()
    x2 = x.detach().clone().requires_grad_()
    F.cross_entropy(x2, y, label_smoothing=0.2).backward()
    assert out.dtype == torch.float32 and torch.equal(x.grad, x2.grad)
    assert "label_smoothing=0.2" in repr(criterion) and client.target in repr(criterion)


@pytest.mark.parametrize("loss", ["l1_loss", "cross_entropy", "binary_cross_entropy_with_logits"])
def test_a_scaled_loss_gets_torchs_own_gradients_bit_for_bit(counting: CountingClient, loss: str) -> None:
    """``(loss * 0.1).backward()`` (gradient accumulation, loss weights): a single loss asks the server again
    with that grad_output, as torch's own backward applies it; the forward's gradients times 0.1 rounded
    differently (80 of 80 elements of l1_loss's, 29 of 80 of bce_with_logits')."""
    torch.manual_seed(3)
    x = torch.randn(16, 5)
    y = torch.randint(0, 5, (16,)) if loss == "cross_entropy" else torch.rand(16, 5)
    xr, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
    (remote_loss(loss, xr, y, client=counting) * 0.1).backward()
    (getattr(F, loss)(xl, y) * 0.1).backward()
    assert torch.equal(xr.grad, xl.grad)
    assert counting.calls == 2  # the forward, and one more with grad_output 0.1
    xr.grad = None
    remote_loss(loss, xr, y, client=counting).backward()
    assert counting.calls == 3  # grad_output 1: the forward's gradients


def test_double_backward_is_refused_not_silently_wrong(client: Client) -> None:
    """A gradient penalty through a remote loss: its gradients carry no graph, so the penalty's own gradient
    was silently missing (x.grad off by 0.006)."""
    x = torch.randn(8, 3, requires_grad=True)
    out = remote_loss("mse_loss", x, torch.zeros(8, 3), client=client)
    with pytest.raises(RuntimeError, match="no double backward"):
        torch.autograd.grad(out, x, create_graph=True)


def test_complex_and_view_bit_inputs(client: Client) -> None:
    """A complex input that requires grad gets its gradient next to a float one (it was left out of
    grad_inputs), and tensors with torch's lazy conjugate or negative bit are sent as their values."""
    torch.manual_seed(4)
    z = torch.randn(6, dtype=torch.complex64)
    t = torch.randn(6)
    zr, tr = z.clone().requires_grad_(), t.clone().requires_grad_()
    zl, tl = z.clone().requires_grad_(), t.clone().requires_grad_()
    remote_loss("l1_loss", zr, tr, client=client).backward()
    F.l1_loss(zl, tl).backward()
    assert zr.grad is not None and torch.equal(zr.grad, zl.grad) and torch.equal(tr.grad, tl.grad)
    for view in (z.conj(), torch._neg_view(t)):
        assert view.is_conj() or view.is_neg()
        assert client.evaluate("l1_loss", view, t).value == F.l1_loss(view.resolve_conj().resolve_neg(), t).item()


def test_tensor_parameters_are_buffers_like_torchs(client: Client) -> None:
    """``RemoteLoss("cross_entropy", weight=w)`` holds ``w`` as nn.CrossEntropyLoss(weight=w) does: ``.double()``
    converts it, ``state_dict`` has it, and the loss is torch's."""
    w = torch.tensor([1.0, 2.0, 3.0])
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 0])
    local = nn.CrossEntropyLoss(weight=w).double()
    remote = RemoteLoss("cross_entropy", client=client, weight=w).double()
    assert list(remote.state_dict()) == list(local.state_dict()) == ["weight"]
    assert [name for name, _ in remote.named_buffers()] == ["weight"] and remote.weight.dtype == torch.float64
    xr, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = remote(xr, y)
    expected = local(xl, y)
    out.backward()
    expected.backward()
    assert out.item() == expected.item() and torch.equal(xr.grad, xl.grad)
    fresh = RemoteLoss("cross_entropy", client=client, weight=torch.ones(3))
    fresh.load_state_dict(remote.float().state_dict())
    assert torch.equal(fresh.weight, w) and torch.equal(fresh.constant_inputs["weight"], w)
    pos = RemoteLoss("bce_with_logits", client=client, pos_weight=torch.tensor([2.0]), weight=torch.tensor([0.5]))
    assert sorted(pos.state_dict()) == sorted(nn.BCEWithLogitsLoss(weight=w, pos_weight=w).state_dict())


def test_a_remote_loss_and_a_model_holding_one_copy_pickle_and_save(server_address: str) -> None:
    """Its client travels as its settings; each copy opens a channel of its own and computes the same loss."""
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 0])
    criterion = RemoteLoss("cross_entropy", client=Client(server_address), weight=torch.tensor([1.0, 2.0, 3.0]),
                           label_smoothing=0.1)
    model = nn.Sequential(nn.Linear(3, 3))
    model.criterion = criterion
    model.double()  # the weight buffer too
    copies = [copy.deepcopy(criterion), pickle.loads(pickle.dumps(criterion))]  # before any call
    expected = criterion(x, y).item()  # the channel is open now
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    copies += [copy.deepcopy(model).criterion, torch.load(buffer, weights_only=False).criterion]
    for again in copies:
        assert again.client is not criterion.client and again.client.config == criterion.client.config
        assert torch.equal(again.weight, criterion.weight)
        assert again(x, y).item() == expected
        again.client.close()
    criterion.client.close()


@pytest.mark.parametrize("upstream", ["0.5 *", "* tensor(3.0)", "/ 3"])
def test_a_scaled_objective_gets_torchs_own_gradients_bit_for_bit(counting: CountingClient, upstream: str) -> None:
    """``(0.5 * objective).backward()``: the objective (weighted terms, L1 and L2 over a model's parameters) asks
    the server again with that grad_output, which backpropagates it through each weighted term and penalty as
    torch's own backward does. The client used to multiply the forward's gradients by it, which rounded
    differently: with ``* tensor(3.0)``, 17 of 40 input, 7 of 15 weight and 2 of 3 bias gradient elements; with
    ``/ 3``, 6, 7 and 2 (a power of two like 0.5 scales exactly either way)."""
    terms = [{"loss": "mse", "weight": 0.3}, {"loss": "smooth_l1_loss", "weight": 0.7, "params": {"beta": 0.5}}]
    l1, l2 = 1e-3, 0.37
    g = torch.Generator().manual_seed(11)
    x = torch.randn(8, 5, generator=g)
    t = torch.randn(8, 3, generator=g)
    torch.manual_seed(12)
    remote, local = nn.Linear(5, 3), nn.Linear(5, 3)
    local.load_state_dict(remote.state_dict())
    xr, xl = x.clone().requires_grad_(), x.clone().requires_grad_()

    def scaled(objective: torch.Tensor) -> torch.Tensor:
        if upstream == "0.5 *":
            return 0.5 * objective
        return objective * torch.tensor(3.0) if upstream == "* tensor(3.0)" else objective / 3

    criterion = RemoteLoss(terms, client=counting, parameters=remote, regularization={"l1": l1, "l2": l2})
    out = criterion(remote(xr), t)
    scaled(out).backward()
    # The same objective as the server computes it: weight * loss per term, then the penalties over the
    # covered parameters (the weight: the default rule skips biases), l1 first.
    pred = local(xl)
    data = 0.3 * F.mse_loss(pred, t) + 0.7 * F.smooth_l1_loss(pred, t, beta=0.5)
    covered = [local.weight]
    expected = data + l1 * sum(p.abs().sum() for p in covered) + 0.5 * l2 * sum(p.pow(2).sum() for p in covered)
    scaled(expected).backward()
    assert out.item() == expected.item()  # the reply's value is still the objective's
    assert torch.equal(xr.grad, xl.grad), f"{int((xr.grad != xl.grad).sum())} of {xr.grad.numel()} differ"
    for (name, p), (_, q) in zip(remote.named_parameters(), local.named_parameters()):
        assert torch.equal(p.grad, q.grad), f"{name}: {int((p.grad != q.grad).sum())} of {p.numel()} differ"
    assert counting.calls == 2  # the forward, and one more with grad_output
    # grad_output 1 still reuses the forward's gradients: no second call.
    criterion(remote(xr), t).backward()
    assert counting.calls == 3


def test_named_parameters_as_the_parameter_source_serves_every_step(client: Client) -> None:
    """RemoteLoss(parameters=model.named_parameters()) kept the generator and read it up at the first call: the
    second step had no parameters ("regularization needs the parameter tensors it applies to"), and the module
    could not be pickled (the RemoteLoss audit, 2026-12-06)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    crit = RemoteLoss("mse", client=client, parameters=model.named_parameters(), regularization={"l2": 0.1})
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    for _ in range(3):
        model.zero_grad()
        crit(model(x), y).backward()
        local = model.weight.detach().clone().requires_grad_()
        bias = model.bias.detach().clone().requires_grad_()
        expected = F.mse_loss(x @ local.T + bias, y) + 0.5 * 0.1 * (local.pow(2).sum())
        gw, = torch.autograd.grad(expected, [local])
        assert torch.allclose(model.weight.grad, gw, rtol=1e-12, atol=0)
    pickle.dumps(crit)  # a dict of tensors, not a generator


def test_a_second_backward_without_retain_graph_is_refused_as_torch_refuses_it(client: Client) -> None:
    """The second backward counted the gradients twice, silently; torch raises. An input changed in place
    between forward and backward is refused too, as torch refuses it (the RemoteLoss audit, 2026-12-06)."""
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    out = remote_loss("mse", a, torch.zeros(2), client=client)
    out.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        out.backward()
    assert a.grad is not None and a.grad.tolist() == [1.0, 2.0]
    kept = remote_loss("mse", a, torch.zeros(2), client=client)
    kept.backward(retain_graph=True)
    kept.backward()  # retain_graph: twice, summed, as torch
    assert a.grad.tolist() == [3.0, 6.0]
    b = torch.tensor([1.0, 2.0], requires_grad=True)
    c = b * 1  # a non-leaf, changed in place before the backward
    changed = remote_loss("mse", c, torch.zeros(2), client=client)
    with torch.no_grad():
        c.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        changed.backward()


def test_torch_func_transforms_get_a_clear_error(client: Client) -> None:
    """torch.func.grad / vmap over a RemoteLoss failed deep in the encoder: "Cannot access data pointer of Tensor
    that doesn't have storage"."""
    with pytest.raises(RuntimeError, match="cannot run under torch.func transforms"):
        torch.func.grad(lambda x: remote_loss("mse", x, torch.zeros(2), client=client))(torch.ones(2))
    with pytest.raises(RuntimeError, match="cannot run under torch.func transforms"):
        torch.func.vmap(lambda x: remote_loss("mse", x, torch.zeros(2), client=client))(torch.ones(3, 2))


def test_a_target_changed_in_place_or_made_in_inference_mode_is_fine_as_locally(client: Client) -> None:
    """Saving every input made a target changed in place before backward, or made under inference_mode (a
    teacher's labels), an error that local torch does not raise (the review of 2026-12-06): only the inputs
    that require grad are saved."""
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    target = torch.zeros(2)
    out = remote_loss("l1_loss", x, target, client=client)
    target.add_(5)  # torch's l1_loss saves its inputs, but lossd reads the gradients the forward got
    out.backward()
    assert x.grad is not None and x.grad.tolist() == [0.5, 0.5]
    with torch.inference_mode():
        labels = torch.zeros(2)
    y = torch.tensor([1.0, 2.0], requires_grad=True)
    remote_loss("l1_loss", y, labels, client=client).backward()
    assert y.grad is not None and y.grad.tolist() == [0.5, 0.5]
