"""Embedding losses: outside torch's documented domain, computed with a warning (refused when strict);
what torch cannot compute meaningfully is refused, naming the field and the rule."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from lossd.client import InvalidArgument, ServerWarning, build_request

X = torch.tensor([[0.3, 1.5, -0.2], [0.8, 0.1, 2.0]])
Y = torch.tensor([[0.5, 1.0, 0.2], [0.1, -0.4, 1.0]])
Z = torch.tensor([[1.0, 0.5, -1.0], [0.0, 0.3, 0.2]])
V = torch.tensor([0.4, -1.2, 0.7])
W = torch.tensor([0.1, 0.9, -0.3])
NAN = math.nan


def _pair(**target):
    return {"input1": X, "input2": Y, **target}


def _ranking(**target):
    return {"input1": V, "input2": W, **target}


def _triplet():
    return {"anchor": X, "positive": Y, "negative": Z}


# Outside the documented domain, well defined: computed as torch does, with a warning; strict refuses.
DOMAIN = [
    ("hinge_embedding_loss", {"input": X, "target": torch.tensor([[1.0, 2.0, 1.0], [-1.0, 1.0, 1.0]])}, {},
     "inputs.target", "values are 1 or -1"),
    ("hinge_embedding_loss", {"input": X, "target": torch.tensor([[1, 0, 1], [-1, 1, 1]])}, {},
     "inputs.target", "values are 1 or -1"),
    ("hinge_embedding_loss", {"input": X, "target": torch.tensor([[1.0, NAN, 1.0], [-1.0, 1.0, 1.0]])}, {},
     "inputs.target", "values are 1 or -1"),
    ("cosine_embedding_loss", _pair(target=torch.tensor([1.0, 0.0])), {}, "inputs.target", "values are 1 or -1"),
    ("cosine_embedding_loss", _pair(target=torch.tensor([NAN, 1.0])), {}, "inputs.target", "values are 1 or -1"),
    ("cosine_embedding_loss", _pair(target=torch.tensor([1.0, -1.0])), {"margin": 1.5}, "params.margin", "[-1, 1]"),
    ("cosine_embedding_loss", _pair(target=torch.tensor([1.0, -1.0])), {"margin": -2}, "params.margin", "[-1, 1]"),
    ("margin_ranking_loss", _ranking(target=torch.tensor([1.0, 3.0, -1.0])), {}, "inputs.target",
     "values are 1 or -1"),
    ("margin_ranking_loss", _ranking(target=torch.tensor([1.0, NAN, -1.0])), {}, "inputs.target",
     "values are 1 or -1"),
    ("margin_ranking_loss", _ranking(target=torch.tensor([2, 1, -1])), {}, "inputs.target", "values are 1 or -1"),
    # p <= 0 is no norm: torch counts non-zeros (p=0) or computes a "distance" that shrinks with the gap.
    ("triplet_margin_loss", _triplet(), {"p": 0.0}, "params.p", "p > 0"),
    ("triplet_margin_loss", _triplet(), {"p": -1.0}, "params.p", "p > 0"),
    ("triplet_margin_loss", _triplet(), {"eps": -0.1}, "params.eps", "eps >= 0"),
    ("pairwise_distance", {"x1": X, "x2": Y}, {"eps": -1.0}, "params.eps", "eps >= 0"),
]


@pytest.mark.parametrize(("loss", "inputs", "params", "field", "rule"), DOMAIN,
                         ids=[f"{b[0]}-{b[3]}-{i}" for i, b in enumerate(DOMAIN)])
def test_outside_the_domain_warns_and_strict_refuses(client, loss, inputs, params, field, rule):
    fn = getattr(F, loss)
    expected = fn(*inputs.values(), **params)
    request, _ = build_request(loss, inputs=inputs, params=params, allow_non_finite=True)
    with pytest.warns(ServerWarning, match=re.escape(field)):
        r = client.evaluate_request(request, as_torch=True)
    assert r.loss.dtype == expected.dtype
    torch.testing.assert_close(r.loss, expected, rtol=0, atol=0, equal_nan=True)
    request.strict = True
    with pytest.raises(InvalidArgument) as err:
        client.evaluate_request(request)
    assert field in err.value.message and rule in err.value.message and "strict" in err.value.message


BAD = [
    # Triplet margins: torch raises a bare ValueError; the schema names the field first.
    ("triplet_margin_loss", _triplet(), {"margin": 0.0}, "params.margin", "> 0"),
    ("triplet_margin_with_distance_loss", _triplet(), {"margin": -1.0}, "params.margin", "> 0"),
    ("triplet_margin_with_distance_loss", _triplet(), {"distance_function": "lambda a, b: 0"},
     "params.distance_function", "'pairwise_distance', 'cosine_distance', 'l1', 'squared_euclidean'"),
    ("triplet_margin_loss", {"anchor": X, "positive": V, "negative": W}, {}, "inputs", "same number of dimensions"),
    ("cosine_similarity", {"x1": X, "x2": Y}, {"eps": -1e-8}, "params.eps", ">= 0"),
    ("cosine_similarity", {"x1": X, "x2": Y}, {"dim": 2}, "params.dim", "must be in [-2, 1]"),
    ("pairwise_distance", {"x1": X, "x2": Y}, {"keepdim": 1}, "params.keepdim", "true or false"),
]


@pytest.mark.parametrize(("loss", "inputs", "params", "field", "rule"), BAD,
                         ids=[f"{b[0]}-{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_refused_with_field_and_rule(client, loss, inputs, params, field, rule):
    # allow_non_finite: these are the losses' own rules, which hold when the request lets NaN through
    # the server's general non-finite check (tests/integration/test_non_finite.py).
    request, _ = build_request(loss, inputs=inputs, params=params, allow_non_finite=True)
    with pytest.raises(InvalidArgument) as err:
        client.evaluate_request(request)
    assert field in err.value.message and rule in err.value.message, err.value.message
    ok = client.evaluate("hinge_embedding_loss", X, torch.tensor([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]]))
    assert ok.value == pytest.approx(float(F.hinge_embedding_loss(X, torch.tensor([[1.0, -1.0, 1.0],
                                                                                  [-1.0, -1.0, 1.0]]))))


def test_torch_really_is_silent_on_what_we_refuse():
    """If torch starts rejecting these itself, the server's checks can say less."""
    bad = torch.tensor([[1.0, 2.0, 1.0], [-1.0, 1.0, 1.0]])
    assert torch.isfinite(F.hinge_embedding_loss(X, bad))
    nan = torch.tensor([[1.0, NAN, 1.0], [-1.0, 1.0, 1.0]])
    assert torch.isfinite(F.hinge_embedding_loss(X, nan))  # the NaN target vanishes
    assert torch.isfinite(F.cosine_embedding_loss(X, Y, torch.tensor([1.0, 0.0])))
    assert torch.isfinite(F.cosine_embedding_loss(X, Y, torch.tensor([1.0, -1.0]), margin=5.0))
    assert torch.isfinite(F.margin_ranking_loss(V, W, torch.tensor([1.0, 3.0, -1.0])))
    assert torch.isfinite(F.triplet_margin_loss(X, Y, Z, p=0))


def test_aliases_and_y_pred_y_true(client):
    r = client.evaluate("CosineSimilarity", X, Y)
    torch.testing.assert_close(r.loss, F.cosine_similarity(X, Y), rtol=0, atol=0)
    r = client.evaluate("pairwise_distance", y_pred=X, y_true=Y, p=1.0)
    torch.testing.assert_close(r.loss, F.pairwise_distance(X, Y, p=1.0), rtol=0, atol=0)
    r = client.evaluate("triplet_margin", X, Y, negative=Z, swap=True)
    assert r.value == pytest.approx(float(F.triplet_margin_loss(X, Y, Z, swap=True)))
    assert set(r.grads) == {"y_pred", "y_true", "negative"}


def test_margin_ranking_target_gets_a_gradient_only_when_float(client):
    r = client.evaluate("margin_ranking", V, W, target=torch.tensor([1.0, -1.0, 1.0]), margin=1.0)
    assert "target" in r.grads
    r = client.evaluate("margin_ranking", V, W, target=torch.tensor([1, -1, 1]), margin=1.0)
    assert "target" not in r.grads
