"""ctc_loss: what torch lets through silently (or words obscurely) is refused, naming the field and the rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lossd.client import InvalidArgument, Unimplemented, build_request

T, N, C = 6, 2, 4
LOG_PROBS = torch.log_softmax(torch.randn(T, N, C, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
                              2).float()
TARGETS = torch.tensor([[1, 2, 3], [2, 2, 0]])
IN_LEN = torch.tensor([6, 5])
TG_LEN = torch.tensor([3, 2])


def _req(**changes):
    inputs = {"log_probs": LOG_PROBS, "targets": TARGETS, "input_lengths": IN_LEN, "target_lengths": TG_LEN}
    params = changes.pop("params", {})
    inputs.update(changes)
    return inputs, params


BAD = [
    # Silent in torch: a finite loss for labels out of range or equal to blank.
    (_req(targets=torch.tensor([[1, 7, 3], [2, 2, 0]])), "inputs.targets", "must lie in [0, 4)"),
    (_req(targets=torch.tensor([[1, -2, 3], [2, 2, 0]])), "inputs.targets", "must lie in [0, 4)"),
    (_req(targets=torch.tensor([[1, 0, 3], [2, 2, 0]])), "inputs.targets", "must not equal the blank index (0)"),
    (_req(targets=torch.tensor([[1, 2, 3], [2, 3, 0]]), params={"blank": 3}), "inputs.targets",
     "must not equal the blank index (3)"),
    (_req(targets=torch.tensor([1, 2, 4, 2, 2])), "inputs.targets", "must lie in [0, 4)"),  # concatenated
    # Raw logits instead of log-probabilities: torch returns a (negative) number.
    (_req(log_probs=torch.randn(T, N, C)), "inputs.log_probs", "must be log-probabilities"),
    # torch checks these, but speaks of "argument #2" or gives no field.
    (_req(input_lengths=torch.tensor([9, 5])), "inputs.input_lengths", "must be <= T = 6"),
    (_req(input_lengths=torch.tensor([-1, 5])), "inputs.input_lengths", "must be >= 0"),
    (_req(target_lengths=torch.tensor([-1, 2])), "inputs.target_lengths", "must be >= 0"),
    (_req(target_lengths=torch.tensor([4, 2])), "inputs.target_lengths", "must be <= S = 3"),
    (_req(targets=torch.tensor([1, 2, 3, 2])), "inputs.target_lengths", "sum(target_lengths) == len(targets)"),
    (_req(targets=torch.tensor([1, 2, 3, 2, 2, 1])), "inputs.target_lengths", "got sum 5 and len 6"),
    (_req(params={"blank": 4}), "params.blank", "must be < C = 4"),
    (_req(params={"blank": -1}), "params.blank", ">= 0"),
    (_req(input_lengths=torch.tensor([6, 5, 4])), "inputs.input_lengths", "must have shape (N) = (2)"),
    (_req(target_lengths=torch.tensor(3)), "inputs.target_lengths", "must have shape (N) = (2)"),
    (_req(targets=TARGETS[None]), "inputs.targets", "(N, S) = (2, S) padded"),
    (_req(targets=torch.tensor([[1, 2, 3]])), "inputs.targets", "(N, S) = (2, S) padded"),
    (_req(log_probs=LOG_PROBS[None]), "inputs.log_probs", "(T, N, C) or (T, C)"),
    (_req(log_probs=LOG_PROBS[:, 0], targets=torch.tensor([1, 2]), input_lengths=torch.tensor([6, 6]),
          target_lengths=torch.tensor(2)), "inputs.input_lengths", "must be a scalar"),
    (_req(targets=TARGETS.float()), "inputs.targets", "integer dtype"),
    (_req(input_lengths=IN_LEN.float()), "inputs.input_lengths", "integer dtype"),
]


@pytest.mark.parametrize(("req", "field", "rule"), BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_refused_with_field_and_rule(client, req, field, rule):
    inputs, params = req
    request, _ = build_request("ctc_loss", inputs=inputs, params=params)
    with pytest.raises(InvalidArgument) as err:
        client.evaluate_request(request)
    assert field in err.value.message and rule in err.value.message, err.value.message
    _still_serving(client)


def _still_serving(client):
    r = client.evaluate("ctc", LOG_PROBS, TARGETS, input_lengths=IN_LEN, target_lengths=TG_LEN)
    assert r.value == float(F.ctc_loss(LOG_PROBS, TARGETS, IN_LEN, TG_LEN))


def test_torch_really_is_silent_on_what_we_refuse():
    """If torch starts rejecting these itself, the server's checks can say less."""
    for bad in ([[1, 7, 3], [2, 2, 0]], [[1, -2, 3], [2, 2, 0]], [[1, 0, 3], [2, 2, 0]]):
        assert torch.isfinite(F.ctc_loss(LOG_PROBS, torch.tensor(bad), IN_LEN, TG_LEN))
    raw = torch.randn(T, N, C, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(F.ctc_loss(raw, TARGETS, IN_LEN, TG_LEN))  # raw logits: a meaningless number


def test_padding_past_target_length_is_not_checked(client):
    targets = torch.tensor([[1, 2, 3], [2, 2, 99]])  # 99 lies past target_lengths[1] = 2: padding
    r = client.evaluate("ctc", LOG_PROBS, targets, input_lengths=IN_LEN, target_lengths=TG_LEN)
    assert r.value == float(F.ctc_loss(LOG_PROBS, targets, IN_LEN, TG_LEN))


def test_unused_time_steps_need_not_be_normalized(client):
    log_probs = LOG_PROBS.clone()
    log_probs[5, 1] = 0.0  # sequence 1 has length 5: step 5 is padding
    r = client.evaluate("ctc", log_probs, TARGETS, input_lengths=IN_LEN, target_lengths=TG_LEN)
    assert r.value == float(F.ctc_loss(log_probs, TARGETS, IN_LEN, TG_LEN))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_unimplemented_and_says_so(client, dtype):
    with pytest.raises(Unimplemented) as err:
        client.evaluate("ctc", LOG_PROBS.to(dtype), TARGETS, input_lengths=IN_LEN, target_lengths=TG_LEN)
    assert str(dtype).removeprefix("torch.") in err.value.message
    _still_serving(client)
