"""A job's curves with matplotlib (``pip install 'lossd[plot]'``; the Agg backend, no display needed).

Three panels per epoch: the objective and its parts (``loss``, ``l1``, ``l2``) with
``val_loss``; the train and validation metrics; the learning rate.

>>> fig = plot_history([{"epoch": 1, "loss": 0.5, "loss_parts": {"loss": 0.4, "l2": 0.1},
...                      "metrics": {"val_accuracy": 0.8}, "lr": 0.01}])   # doctest: +SKIP
>>> fig.get_size_inches().tolist()                                        # doctest: +SKIP
[10.0, 8.0]
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["FIGSIZE", "DPI", "plot_history"]

#: Figure size in inches and resolution: a saved PNG is 1000 x 800 pixels.
FIGSIZE = (10.0, 8.0)
DPI = 100


def _pyplot() -> Any:
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ModuleNotFoundError:
        raise ModuleNotFoundError("plotting needs matplotlib: pip install 'lossd[plot]'", name="matplotlib") from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot_history(history: Sequence[Mapping[str, Any]], title: str = "",
                 path: str | os.PathLike[str] | None = None) -> Any:
    """A ``Figure`` of the per-epoch ``history`` rows (``epoch``, ``loss``, ``loss_parts``,
    ``metrics``, ``lr``); written to ``path`` (format from its suffix) when given."""
    if not history:
        raise ValueError("the job has no finished epoch to plot")
    from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]

    _pyplot()
    fig: Any = Figure(figsize=FIGSIZE, dpi=DPI)
    ax_loss, ax_metrics, ax_lr = fig.subplots(3, 1, sharex=True)
    epochs = [int(h["epoch"]) for h in history]
    ax_loss.plot(epochs, [h["loss"] for h in history], marker=".", label="objective")
    for part in sorted({k for h in history for k in h.get("loss_parts", {})}):
        ax_loss.plot(epochs, [h.get("loss_parts", {}).get(part, float("nan")) for h in history], label=part)
    metric_names = sorted({k for h in history for k in h.get("metrics", {})})
    if "val_loss" in metric_names:
        ax_loss.plot(epochs, [h["metrics"].get("val_loss", float("nan")) for h in history], "--", label="val_loss")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(loc="best", fontsize="small")
    others = [m for m in metric_names if m != "val_loss"]
    for name in others:
        style = "--" if name.startswith("val_") else "-"
        ax_metrics.plot(epochs, [h["metrics"].get(name, float("nan")) for h in history], style, marker=".", label=name)
    ax_metrics.set_ylabel("metrics")
    if others:
        ax_metrics.legend(loc="best", fontsize="small")
    ax_lr.plot(epochs, [h.get("lr", float("nan")) for h in history], marker=".")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    ticker: Any = importlib.import_module("matplotlib.ticker")
    for ax in (ax_loss, ax_metrics, ax_lr):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path), dpi=DPI)
    return fig
