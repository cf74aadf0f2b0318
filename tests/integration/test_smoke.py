"""The seed's check through a real server: cross_entropy == nll_loss(log_softmax)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossd.client import InvalidArgument, NotFound


def test_seed_cross_entropy_equals_nll_of_log_softmax(client):
    logits = torch.tensor([[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]])
    target = torch.tensor([0, 2])
    r = client.evaluate("cross_entropy", logits, target)
    assert round(r.value, 4) == 0.5493
    nll = client.evaluate("nll_loss", F.log_softmax(logits, 1), target)
    assert r.value == pytest.approx(nll.value, abs=1e-6)
    assert isinstance(r.grads["y_pred"], torch.Tensor)


def test_unknown_loss_lists_close_names(client):
    with pytest.raises(NotFound, match="cross_entropy"):
        client.evaluate("cross_entropi", [[1.0]], [0])


def test_bad_param_names_field(client):
    with pytest.raises(InvalidArgument, match="params.label_smoothing"):
        client.evaluate("ce", np.zeros((2, 3), np.float32), [0, 1], label_smoothing=1.5)
