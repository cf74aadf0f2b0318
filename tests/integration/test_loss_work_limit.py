"""``--max-loss-work`` against real servers: what a call's losses may build beyond their inputs is the server's
setting, on every path that checks it (EvaluateLoss inline and on the pool, EvaluateLossBatch groups,
EvaluateLossStream, objectives, TrainJob submission). A server with a low limit refuses what the default
accepts, RESOURCE_EXHAUSTED naming the field and the flag; one with a higher limit computes what the default
refuses, bit for bit as the loss computes in-process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from lossd.client import Client, EvaluateResult, ResourceExhausted, build_request
from lossd.client import LossdError
from support.refusals import assert_still_serves
from support.servers import start_in_process
from support.training import request, small_spec

#: The low server's limit: nt_xent_loss builds the (2N)² similarities of its N rows, so 32 rows fit and 33 do not;
#: mse_loss broadcasts a [1, N] and an [N, 1] input to N², so N = 64 fits and 65 does not. The default (2^26)
#: accepts all of them.
LOW = 4096
RNG = np.random.default_rng(11)
pytestmark = pytest.mark.filterwarnings("ignore:Using a target size")  # torch's, on mse_loss's broadcast


def rows(n: int) -> dict[str, np.ndarray]:
    return {"input": RNG.standard_normal((n, 4)).astype(np.float32),
            "target": RNG.standard_normal((n, 4)).astype(np.float32)}


def crossed(n: int) -> dict[str, np.ndarray]:
    return {"input": RNG.standard_normal((1, n)).astype(np.float32),
            "target": RNG.standard_normal((n, 1)).astype(np.float32)}


# (loss, inputs over LOW, inputs at LOW, field named): nt_xent_loss (declares its work) is evaluated on the
# thread pool; a small mse_loss call on the event loop (inline).
OVER = [("nt_xent_loss", rows(33), rows(32), "inputs.input"), ("mse_loss", crossed(65), crossed(64), "inputs")]


@pytest.fixture(scope="module")
def low() -> Iterator[Client]:
    with start_in_process(max_loss_work=LOW) as address, Client(address) as c:
        yield c


def assert_over(e: LossdError, field: str) -> None:
    assert isinstance(e, ResourceExhausted) and e.field == field, e
    assert f"at most {LOW} elements beyond its inputs (--max-loss-work, env LOSSD_MAX_LOSS_WORK)" in e.message, e


@pytest.mark.parametrize("loss, over, at, field", OVER, ids=[c[0] for c in OVER])
def test_evaluate_loss_under_a_low_limit(low: Client, client: Client, loss: str, over: dict[str, np.ndarray],
                                         at: dict[str, np.ndarray], field: str) -> None:
    for _ in range(2):  # the second call of a signature may take its kept plan: refused all the same
        with pytest.raises(ResourceExhausted) as info:
            low.evaluate(loss, **over)
        assert_over(info.value, field)
    assert_still_serves(low)
    assert low.evaluate(loss, **at).value == client.evaluate(loss, **at).value  # at the limit
    accepted = client.evaluate(loss, **over)  # the default's limit
    assert np.isfinite(accepted.value)


def test_evaluate_loss_batch_and_stream_under_a_low_limit(low: Client, client: Client) -> None:
    """Each item refused alone, in a group of the same signature too (its plan kept from the first batch);
    the other items answered; the default server answers them all."""
    items = [build_request("nt_xent_loss", inputs=rows(33))[0], build_request("mse_loss", inputs=crossed(65))[0],
             build_request("mse_loss", inputs=crossed(65))[0], build_request("nt_xent_loss", inputs=rows(32))[0],
             build_request("mse_loss", inputs=rows(3))[0]]
    fields = ["inputs.input", "inputs", "inputs", None, None]
    for outcomes in (low.evaluate_many(items), low.evaluate_many(items),
                     list(low.evaluate_stream(items, raise_on_error=False))):
        for outcome, field in zip(outcomes, fields, strict=True):
            if field is None:
                assert isinstance(outcome, EvaluateResult), outcome
            else:
                assert isinstance(outcome, LossdError)
                assert_over(outcome, field)
    assert all(isinstance(o, EvaluateResult) for o in client.evaluate_many(items))


def test_an_objectives_terms_count_together_against_the_limit(low: Client, client: Client) -> None:
    """Two nt_xent_loss terms of 24 rows build 48² each: one fits the low limit, the two together do not."""
    x = rows(24)
    one = [{"loss": "nt_xent_loss"}]
    two = [{"loss": "nt_xent_loss", "name": "a"}, {"loss": "nt_xent_loss", "name": "b"}]
    assert low.evaluate(one, **x).value == client.evaluate(one, **x).value
    with pytest.raises(ResourceExhausted) as info:
        low.evaluate(two, **x)
    assert_over(info.value, "terms[1].inputs.input")
    assert "in all (the objective's terms before this one: 2304)" in info.value.message
    with pytest.raises(ResourceExhausted) as info:  # a regularized plain request is an objective too
        low.evaluate("nt_xent_loss", **rows(33), parameters={"w": np.ones((1, 1), np.float32)},
                     regularization={"l2": 0.1})
    assert_over(info.value, "inputs.input")
    assert np.isfinite(client.evaluate(two, **x).value)


def test_a_train_job_is_checked_against_the_servers_limit(low: Client) -> None:
    """nt_xent_loss on a batch of 64 rows (128² similarities) is refused at submission, naming batch_size and
    the flag, and nothing is queued; the default limit accepts it."""
    from lossd.server.losses import REGISTRY
    from lossd.server.training import plan_job
    from lossd.server.training._spec import check_loss_accepts_model

    spec = small_spec(data={"builtin": {"name": "linear_regression", "params": {"n_samples": 200, "n_features": 1}},
                            "validation_fraction": 0.0},
                      model={"linear": {}}, loss={"name": "nt_xent_loss"}, batch_size=64, metrics=[])
    check_loss_accepts_model(plan_job(request(spec), REGISTRY))  # the default's limit
    before = len(low.jobs())
    with pytest.raises(ResourceExhausted) as info:
        low.submit(spec)
    e = info.value
    assert e.field == "batch_size" and "on a batch of 64 samples, nt_xent_loss would build" in e.message, e
    assert f"at most {LOW} elements beyond its inputs (--max-loss-work, env LOSSD_MAX_LOSS_WORK)" in e.message, e
    assert len(low.jobs()) == before


def test_a_higher_limit_computes_what_the_default_refuses(client: Client) -> None:
    """soft_cldice_loss counts 32 · (iter_ + 1) · N · C · pixels: 1 × 2 × 32³ at 32 iterations is 69,206,016,
    over the default 2^26; a server allowing 2^27 computes it, value and gradient bit for bit as the loss does
    in-process."""
    from lossd.server.evaluation import bind_params
    from lossd.server.losses import REGISTRY

    g = torch.Generator().manual_seed(5)
    x = torch.rand(1, 2, 32, 32, 32, generator=g)
    y = (torch.rand(1, 2, 32, 32, 32, generator=g) > 0.5).float()
    inputs: dict[str, Any] = {"input": x.numpy(), "target": y.numpy()}
    with pytest.raises(ResourceExhausted) as info:
        client.evaluate("soft_cldice_loss", **inputs, iter_=32, grad_inputs=["input"])
    assert info.value.field == "inputs.input" and "69206016 elements" in info.value.message, info.value
    assert "at most 67108864 elements beyond its inputs (--max-loss-work" in info.value.message, info.value

    spec = REGISTRY.get("soft_cldice_loss")
    leaf = x.clone().requires_grad_(True)
    local = spec.fn(input=leaf, target=y, **bind_params(spec, {"iter_": 32}))
    (grad,) = torch.autograd.grad(local, [leaf])
    with start_in_process(max_loss_work=2**27) as address, Client(address) as big:
        r = big.evaluate("soft_cldice_loss", **inputs, iter_=32, grad_inputs=["input"])
    assert r.loss.dtype == np.float32 and r.loss.tobytes() == local.detach().numpy().tobytes()
    assert r.grads["input"].tobytes() == grad.numpy().tobytes()
