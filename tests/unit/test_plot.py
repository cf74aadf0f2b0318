"""Training curves (``lossd plot``, ``result.plot()``): what each panel shows, and a missing
matplotlib or torch named with its pip command."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from lossd.client._plot import plot_history

pytest.importorskip("matplotlib")


def _history(lrs: list[float], regularized: bool) -> list[dict[str, Any]]:
    rows = []
    for epoch, lr in enumerate(lrs, start=1):
        loss = 1.0 / epoch
        parts = {"loss": loss, "l2": 0.01} if regularized else {"loss": loss}
        rows.append({"epoch": epoch, "loss": sum(parts.values()), "loss_parts": parts, "lr": lr,
                     "metrics": {"val_loss": loss * 1.1, "train_accuracy": 0.5 + epoch / 10,
                                 "val_accuracy": 0.5 + epoch / 12}})
    return rows


def _labels(ax: Any) -> list[str]:
    return [line.get_label() for line in ax.lines]


def test_constant_rate_has_no_panel_and_is_in_the_title() -> None:
    fig = plot_history(_history([0.01] * 4, regularized=True), title="job x")
    assert len(fig.axes) == 2
    assert fig._suptitle.get_text() == "job x  (learning rate 0.01, constant)"


def test_changing_rate_gets_a_short_panel() -> None:
    fig = plot_history(_history([0.1, 0.05, 0.025, 0.0125], regularized=True))
    loss_ax, metrics_ax, lr_ax = fig.axes
    assert lr_ax.get_ylabel() == "learning rate"
    assert lr_ax.lines[0].get_ydata().tolist() == [0.1, 0.05, 0.025, 0.0125]
    assert lr_ax.get_position().height < loss_ax.get_position().height / 2


def test_without_regularization_the_loss_is_drawn_once() -> None:
    fig = plot_history(_history([0.01] * 3, regularized=False))
    assert _labels(fig.axes[0]) == ["loss", "val_loss"]


def test_with_regularization_the_objective_and_its_parts() -> None:
    fig = plot_history(_history([0.01] * 3, regularized=True))
    assert _labels(fig.axes[0]) == ["objective", "l2", "loss", "val_loss"]
    assert _labels(fig.axes[1]) == ["train_accuracy", "val_accuracy"]


BLOCKED = """
import sys
sys.modules[{module!r}] = None
import numpy as np
from lossd.client import TrainResult, load_spec
from lossd.client._extras import MissingExtra
result = TrainResult("ab", "SUCCEEDED", {{}}, [{{"epoch": 1, "loss": 1.0, "loss_parts": {{}}, "metrics": {{}}, "lr": 0.1}}],
                     {{"out.weight": np.ones((1, 2), np.float32), "out.bias": np.zeros(1, np.float32)}},
                     spec=load_spec({{"model": {{"linear": {{}}}}}}))
try:
    {call}
except MissingExtra as e:
    print(e)
"""


@pytest.mark.parametrize("module, call, message", [
    ("matplotlib", "result.plot()",
     "plotting needs matplotlib, which is not installed: pip install matplotlib (or pip install '.[plot]' in the lossd clone)"),
    ("torch", "result.build_model()",
     "building the trained model needs torch, which is not installed: pip install torch "
     "(or pip install '.[server]' in the lossd clone)"),
])
def test_missing_extra_names_its_pip_command(module: str, call: str, message: str) -> None:
    proc = subprocess.run([sys.executable, "-c", BLOCKED.format(module=module, call=call)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == message
