"""The spectral (Jukebox) loss, MONAI's JukeboxLoss: the mean squared difference of the amplitudes of
the n-dimensional FFTs of input and target, over channels and space (Dhariwal et al. 2020).

>>> import torch
>>> x = torch.ones(1, 1, 4)
>>> jukebox_loss(x, x, fft_signal_size=None, fft_norm="ortho", reduction="mean").item()
0.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ._registry import Equivalent, Input, Param, Work, register_loss, require, require_same_shape, widened

__all__ = ["jukebox_loss"]


def _spectra(bound: Mapping[str, Any], params: Mapping[str, Any]) -> int:
    """The reals of jukebox_loss's two complex spectra, alive together: 4 · N · Π ``fft_signal_size`` (its
    zero-padding made 125 bytes of request build a 2^24-point FFT, 299 MB; an audit, 2026-12-06). Spectra of no
    more points than a sample holds (no ``fft_signal_size``, or one that pads nothing) are bounded with the input
    by the message size: 0, whether the size is sent or left out."""
    sizes, x = params.get("fft_signal_size"), bound["input"]
    points = None if sizes is None else math.prod(max(int(s), 0) for s in sizes)
    return 0 if points is None or points <= math.prod(x.shape[1:]) else 4 * int(x.shape[0]) * points



@register_loss(
    "jukebox_loss",
    work=Work("the two complex spectra (4 · N · Π fft_signal_size reals)", "params.fft_signal_size", _spectra),
    aliases=("JukeboxLoss", "spectral_loss"),
    refuses=(
        "an input without channels and space (N, C, *spatial)",
        "a target shaped unlike input",
        "an fft_signal_size not one positive size per channel and spatial dim",
    ),
    inputs=(
        Input(
            "input", "prediction", differentiable=True, aliases=("y_pred",), doc="(N, C, *spatial), 1 to 3 spatial dims"
        ),
        Input("target", "target", aliases=("y_true",), doc="shaped like input"),
    ),
    params=(
        Param(
            "fft_signal_size",
            "int_list",
            None,
            "FFT size per transformed dim (C, *spatial): crops or zero-pads "
            "(torch.fft.fftn's s); null: the input's sizes.",
            nullable=True,
        ),
        Param("fft_norm", "string", "ortho", "torch.fft.fftn's norm.", choices=("ortho", "forward", "backward")),
        Param(
            "reduction",
            "string",
            "mean",
            "'mean' or 'sum' over the amplitudes, or 'none' (N, C', *spatial').",
            choices=("none", "mean", "sum"),
        ),
    ),
    description="Spectral loss: mean squared difference of the FFT amplitudes of input and target (MONAI JukeboxLoss).",
    source="lossd (Dhariwal et al. 2020; MONAI JukeboxLoss conventions)",
    notes="The FFT runs over every dim but the batch (MONAI's spatial_dims is the input's). The amplitude |z| has "
    "gradient 0 where z = 0 (torch's convention), not NaN. float16 and bfloat16 inputs are transformed in float32 "
    "(torch's CPU FFT has neither); the loss comes back in the input's dtype.",
    example=lambda dt: {
        "input": torch.tensor([[[0.2, 0.8, 0.5, 0.1], [0.9, 0.4, 0.3, 0.6]]], dtype=dt),
        "target": torch.tensor([[[0.1, 0.7, 0.6, 0.2], [1.0, 0.3, 0.2, 0.5]]], dtype=dt),
    },
    equivalents=(
        Equivalent("monai.losses.JukeboxLoss(spatial_dims=2)", {}, "input and target (N, C, H, W)"),
        Equivalent(
            "monai.losses.JukeboxLoss(spatial_dims=3, fft_signal_size=(2, 6, 4, 4), fft_norm='forward', "
            "reduction='sum')",
            {"fft_signal_size": [2, 6, 4, 4], "fft_norm": "forward", "reduction": "sum"},
            "input and target (N, C, D, H, W)",
        ),
    ),
)
def jukebox_loss(input: torch.Tensor, target: torch.Tensor, *, fft_signal_size: list[int] | None, fft_norm: str,
                 reduction: str) -> torch.Tensor:
    """``(|fftn(input)| - |fftn(target)|)²`` over dims 1..; reduced by ``reduction``."""
    require(3 <= input.dim() <= 5, "inputs.input", f"must be (N, C, *spatial) with 1 to 3 spatial dims, "
            f"got shape {list(input.shape)}")
    require_same_shape(input, target, "the amplitudes are compared element by element")
    dims = tuple(range(1, input.dim()))
    if fft_signal_size is not None:
        require(len(fft_signal_size) == len(dims) and all(s > 0 for s in fft_signal_size), "params.fft_signal_size",
                f"needs one positive size per channel and spatial dim: {len(dims)}, got {fft_signal_size}")
    if input.numel() == 0:  # MKL's FFT refuses an empty batch ("Inconsistent configuration parameters")
        require(fft_signal_size is None, "params.fft_signal_size", "must be null for an empty input")
        loss = (input - target) * 0  # as torch's own losses: the empty reduction (sum 0, mean NaN), zero gradients
        return loss if reduction == "none" else (loss.sum() if reduction == "sum" else loss.mean())
    # torch's CPU FFT has no float16 / bfloat16: those run in float32, the result in the input's dtype
    x, y = widened(input), widened(target)
    amplitude_y: torch.Tensor = torch.fft.fftn(y, s=fft_signal_size, dim=dims, norm=fft_norm).abs()
    amplitude_x: torch.Tensor = torch.fft.fftn(x, s=fft_signal_size, dim=dims, norm=fft_norm).abs()
    loss = ((amplitude_y - amplitude_x) ** 2).to(input.dtype)
    return loss if reduction == "none" else (loss.sum() if reduction == "sum" else loss.mean())
