"""Losses with their own weights: weights in, gradients out; bad layouts refused naming the input and shape."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lossd.client import InvalidArgument, build_request

G = torch.Generator().manual_seed(0)
X = torch.randn(5, 8, generator=G, dtype=torch.float64)
Y = torch.tensor([0, 4, 9, 2, 6])
ASM_PARAMS = {"n_classes": 10, "cutoffs": [3, 6], "div_value": 2.0}


def _asm_module(head_bias: bool = False) -> nn.AdaptiveLogSoftmaxWithLoss:
    torch.manual_seed(0)
    return nn.AdaptiveLogSoftmaxWithLoss(8, 10, [3, 6], div_value=2.0, head_bias=head_bias, dtype=torch.float64)


def _asm_inputs(**changes):
    weights = {k: v.detach() for k, v in _asm_module().state_dict().items()}
    inputs = {"input": X, "target": Y, **weights}
    for k, v in changes.items():
        if v is None:
            inputs.pop(k)
        else:
            inputs[k] = v
    return inputs


def test_state_dict_keys_and_aliases_match_the_module_and_its_parameter_grads(client):
    """The module with the same weights, run locally: same loss and the same .grad on every parameter."""
    module = _asm_module(head_bias=True)
    x = X.clone().requires_grad_(True)
    module(x, Y).loss.backward()
    expected = module(X, Y).loss.detach()

    weights = {k: v.detach() for k, v in module.state_dict().items()}
    r = client.evaluate_request(build_request("AdaptiveLogSoftmaxWithLoss", inputs={"input": X, "target": Y, **weights},
                                              params={**ASM_PARAMS, "head_bias": True})[0], as_torch=True)
    torch.testing.assert_close(r.loss, expected, rtol=0, atol=0)
    torch.testing.assert_close(r.grads["input"], x.grad, rtol=0, atol=0)
    for name, param in module.named_parameters():
        torch.testing.assert_close(r.grads[name], param.grad, rtol=0, atol=0, msg=name)

    short = {"head_weight": weights["head.weight"], "head_bias": weights["head.bias"],
             "tail_0_proj": weights["tail.0.0.weight"], "tail_0_out": weights["tail.0.1.weight"],
             "tail_1_proj": weights["tail.1.0.weight"], "tail_1_out": weights["tail.1.1.weight"]}
    r2 = client.evaluate_request(build_request("adaptive_log_softmax", X, Y, inputs=short,
                                               params={**ASM_PARAMS, "head_bias": True})[0], as_torch=True)
    torch.testing.assert_close(r2.loss, expected, rtol=0, atol=0)
    assert set(r2.grads) == {"y_pred", *short}
    torch.testing.assert_close(r2.grads["tail_1_out"], module.tail[1][1].weight.grad, rtol=0, atol=0)


def test_server_leaves_global_rng_alone(client):
    """The module is built on the meta device: no random initialisation on the server."""
    request, _ = build_request("adaptive_log_softmax", inputs=_asm_inputs(), params=ASM_PARAMS)
    before = torch.random.get_rng_state()
    client.evaluate_request(request)
    assert torch.equal(before, torch.random.get_rng_state())


BAD_ASM = [
    (_asm_inputs(), {"cutoffs": [3, 6]}, "params.n_classes", "is required"),
    (_asm_inputs(), {"n_classes": 10}, "params.cutoffs", "is required"),
    (_asm_inputs(), {**ASM_PARAMS, "cutoffs": [6, 3]}, "params.cutoffs", "increasing order"),
    (_asm_inputs(), {**ASM_PARAMS, "cutoffs": [3, 10]}, "params.cutoffs", "[1, 9]"),
    (_asm_inputs(), {**ASM_PARAMS, "cutoffs": [3, 3]}, "params.cutoffs", "unique"),
    (_asm_inputs(), {**ASM_PARAMS, "cutoffs": []}, "params.cutoffs", "non-empty"),
    (_asm_inputs(), {**ASM_PARAMS, "n_classes": 40, "cutoffs": list(range(1, 10))}, "params.cutoffs",
     "at most 8 tail clusters"),
    (_asm_inputs(), {**ASM_PARAMS, "div_value": 0.0}, "params.div_value", "> 0"),
    (_asm_inputs(), {**ASM_PARAMS, "div_value": 1e-200}, "params.div_value", "cannot be sized"),
    (_asm_inputs(), {**ASM_PARAMS, "in_features": 7}, "params.in_features", "input.shape[-1] is 8"),
    (_asm_inputs(), {**ASM_PARAMS, "n_classes": 1}, "params.n_classes", ">= 2"),
    (_asm_inputs(target=torch.tensor([0, 4, 10, 2, 6])), ASM_PARAMS, "inputs.target", "[0, 10)"),
    (_asm_inputs(target=torch.tensor([0, 4, -1, 2, 6])), ASM_PARAMS, "inputs.target", "[0, 10)"),
    (_asm_inputs(target=Y[:4]), ASM_PARAMS, "inputs.target", "must have shape (N) = (5)"),
    (_asm_inputs(input=X[0], target=Y), ASM_PARAMS, "inputs.target", "must be a scalar"),
    (_asm_inputs(input=X[None]), ASM_PARAMS, "inputs.input", "(N, in_features)"),
    (_asm_inputs(**{"tail.1.0.weight": None}), ASM_PARAMS, "inputs.tail.1.0.weight", "is required"),
    (_asm_inputs(**{"tail.1.1.weight": torch.zeros(3, 2, dtype=torch.float64)}), ASM_PARAMS,
     "inputs.tail.1.1.weight", "must have shape [4, 2] (10 - 6 = 4 classes in cluster 1"),
    (_asm_inputs(**{"tail.0.0.weight": torch.zeros(3, 8, dtype=torch.float64)}), ASM_PARAMS,
     "inputs.tail.0.0.weight", "must have shape [4, 8]"),
    (_asm_inputs(**{"head.weight": torch.zeros(4, 8, dtype=torch.float64)}), ASM_PARAMS,
     "inputs.head.weight", "must have shape [5, 8]"),
    (_asm_inputs(**{"tail.2.0.weight": torch.zeros(1, 8, dtype=torch.float64)}), ASM_PARAMS,
     "inputs.tail.2.0.weight", "is not used"),
    (_asm_inputs(**{"head.bias": torch.zeros(5, dtype=torch.float64)}), ASM_PARAMS, "inputs.head.bias",
     "params.head_bias is false"),
    (_asm_inputs(), {**ASM_PARAMS, "head_bias": True}, "inputs.head.bias", "is required when params.head_bias"),
    (_asm_inputs(**{"head.weight": None}), ASM_PARAMS, "inputs.head.weight", "is required"),
    # torch's own error, as locally: the module's matmul needs one dtype
    (_asm_inputs(**{"tail.0.1.weight": torch.zeros(3, 4)}), ASM_PARAMS, "inputs", "same dtype"),
]


@pytest.mark.parametrize(("inputs", "params", "field", "rule"), BAD_ASM,
                         ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD_ASM)])
def test_adaptive_log_softmax_refused_with_field_and_rule(client, inputs, params, field, rule):
    request, _ = build_request("adaptive_log_softmax_with_loss", inputs=inputs, params=params)
    with pytest.raises(InvalidArgument) as err:
        client.evaluate_request(request)
    assert field in err.value.message and rule in err.value.message, err.value.message
    _still_serving(client)


def _still_serving(client):
    request, _ = build_request("adaptive_log_softmax", inputs=_asm_inputs(), params=ASM_PARAMS)
    r = client.evaluate_request(request)
    with torch.no_grad():
        assert r.value == pytest.approx(float(_asm_module()(X, Y).loss))


# ---------------------------------------------------------------------------------------
# linear_cross_entropy

LX = torch.randn(4, 3, generator=G)
LW = torch.randn(5, 3, generator=G)
LT = torch.tensor([0, 4, 2, 1])


def _lce(**changes):
    inputs = {"input": LX, "linear_weight": LW, "target": LT}
    params = changes.pop("params", {})
    inputs.update(changes)
    return inputs, params


BAD_LCE = [
    (_lce(target=torch.tensor([0, 5, 2, 1])), "inputs.target", "must lie in [0, 5) or equal ignore_index (-100)"),
    (_lce(target=torch.tensor([0, -1, 2, 1])), "inputs.target", "equal ignore_index (-100)"),
    (_lce(target=torch.tensor([0, -2, 2, 1]), params={"ignore_index": -1}), "inputs.target", "ignore_index (-1)"),
    (_lce(target=torch.softmax(torch.randn(4, 5, generator=G), 1), params={"ignore_index": -100}),
     "params.ignore_index", "must be null"),
    (_lce(target=torch.rand(4, generator=G)), "inputs.target", "logits' shape [4, 5]"),
    (_lce(params={"label_smoothing": 1.5}), "params.label_smoothing", "must be <= 1"),
    (_lce(weight=torch.ones(4)), "inputs.weight", "must have shape [5]"),
    (_lce(linear_weight=torch.randn(5)), "inputs.linear_weight", "(C, in_features)"),
    (_lce(input=torch.randn(2, 4, 3)), "inputs.input", "(N, in_features)"),
    (_lce(linear_bias=torch.zeros(4)), "inputs", "linear_bias shape"),
    (_lce(params={"options": {"bogus": 1}}), "params.options.bogus", "is not an option"),
    (_lce(params={"options": {"batch_chunk_size": 0}}), "params.options.batch_chunk_size", "positive integer"),
    (_lce(params={"options": {"acc_policy": "fast"}}), "params.options", "invalid acc_policy"),
]


@pytest.mark.parametrize(("req", "field", "rule"), BAD_LCE, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD_LCE)])
def test_linear_cross_entropy_refused_with_field_and_rule(client, req, field, rule):
    inputs, params = req
    request, _ = build_request("linear_cross_entropy", inputs=inputs, params=params)
    with pytest.raises(InvalidArgument) as err:
        client.evaluate_request(request)
    assert field in err.value.message and rule in err.value.message, err.value.message
    r = client.evaluate("LinearCrossEntropyLoss", LX, LT, linear_weight=LW)
    assert r.value == float(F.linear_cross_entropy(LX, LW, LT))


def test_linear_cross_entropy_weights_get_gradients_class_weight_does_not(client):
    b = torch.randn(5, generator=G)
    r = client.evaluate("linear_cross_entropy", LX, LT, linear_weight=LW, linear_bias=b, weight=torch.ones(5))
    assert set(r.grads) == {"y_pred", "linear_weight", "linear_bias"}
