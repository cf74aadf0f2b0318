"""A job's curves with matplotlib (``pip install matplotlib``, the ``lossd[plot]`` extra;
the Agg backend, no display needed).

Per epoch: the objective with ``val_loss``, and its parts (``loss``, ``l1``, ``l2``)
when the job is regularized (without regularization the objective is the loss: one
line); the train and validation metrics; and the learning rate in a short third
panel only when it changes (a constant rate is written in the figure's title).

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

from ._extras import import_extra

__all__ = ["FIGSIZE", "DPI", "plot_history", "require_matplotlib"]

#: Figure size in inches and resolution: a saved PNG is 1000 x 800 pixels.
FIGSIZE = (10.0, 8.0)
DPI = 100


def require_matplotlib() -> Any:
    """matplotlib on the Agg backend, or :class:`MissingExtra` naming the pip command."""
    matplotlib: Any = import_extra("matplotlib", "plotting", "plot")
    matplotlib.use("Agg")
    return matplotlib


def _constant(values: Sequence[float]) -> bool:
    return all(v == values[0] for v in values)


def plot_history(history: Sequence[Mapping[str, Any]], title: str = "",
                 path: str | os.PathLike[str] | None = None) -> Any:
    """A ``Figure`` of the per-epoch ``history`` rows (``epoch``, ``loss``, ``loss_parts``,
    ``metrics``, ``lr``); written to ``path`` (format from its suffix) when given."""
    if not history:
        raise ValueError("the job has no finished epoch to plot")
    require_matplotlib()
    figure: Any = importlib.import_module("matplotlib.figure")
    ticker: Any = importlib.import_module("matplotlib.ticker")
    epochs = [int(h["epoch"]) for h in history]
    rates = [float(h.get("lr", float("nan"))) for h in history]
    lr_panel = not _constant(rates)
    if not lr_panel:
        title = f"{title}  (learning rate {rates[0]:g}, constant)".strip()

    fig: Any = figure.Figure(figsize=FIGSIZE, dpi=DPI)
    axes = list(fig.subplots(3 if lr_panel else 2, 1, sharex=True,
                             gridspec_kw={"height_ratios": [3, 3, 1] if lr_panel else [1, 1]}))
    ax_loss, ax_metrics = axes[0], axes[1]
    parts = sorted({k for h in history for k in h.get("loss_parts", {})})
    regularized = any(p != "loss" for p in parts)
    ax_loss.plot(epochs, [h["loss"] for h in history], marker=".", label="objective" if regularized else "loss")
    for part in parts if regularized else ():
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
    if lr_panel:
        axes[2].plot(epochs, rates, marker=".")
        axes[2].set_ylabel("learning rate")
    axes[-1].set_xlabel("epoch")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path), dpi=DPI)
    return fig
