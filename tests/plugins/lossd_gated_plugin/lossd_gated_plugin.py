"""A test-only lossd plugin: ``gated_mse_loss``, torch's ``mse_loss`` behind a gate the test opens.

The server imports this module as the entry point ``gated`` (group ``lossd.losses``) that
:class:`support.gated_loss.LossGate` installs for one ``python -m lossd.server`` process. An
evaluation announces that it runs (the file ``entered`` in the gate directory named by the
environment variable ``LOSSD_TEST_GATE``, which the test sets when it starts the server), then
waits until the test creates the file ``open`` there, and only then computes. So the test decides
when an evaluation in flight ends, whatever the machine's load. Never imported by the test process
itself (registering would add the loss to its registry).
"""

import os
import time
from pathlib import Path

import torch

from lossd.server.losses import Input, register_loss, require

#: The environment variable naming the gate directory.
GATE_ENV = "LOSSD_TEST_GATE"
#: An evaluation gives up (and fails) after waiting this long for the gate to open.
MAX_WAIT_S = 120.0

PRED = Input("input", "prediction", differentiable=True, doc="predictions")
TARGET = Input("target", "target", doc="targets, same shape")


def _example(dt):
    return {"input": torch.tensor([1.0, 2.0, 4.0], dtype=dt), "target": torch.tensor([1.5, 2.0, 3.0], dtype=dt)}


@register_loss("gated_mse_loss", inputs=(PRED, TARGET), description="mse_loss once the test opens the gate.",
               example=_example)
def gated_mse_loss(input, target):
    """``torch.nn.functional.mse_loss(input, target)``, computed once ``<gate>/open`` exists."""
    require(input.shape == target.shape, "inputs.target", "must have input's shape")
    gate = Path(os.environ[GATE_ENV])
    (gate / "entered").touch()
    deadline = time.monotonic() + MAX_WAIT_S
    while not (gate / "open").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test did not open {gate} within {MAX_WAIT_S:.0f}s")
        time.sleep(0.005)
    return torch.nn.functional.mse_loss(input, target)
