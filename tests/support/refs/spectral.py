"""jukebox_loss: FFT amplitudes as sqrt(re² + im²), MONAI's formula."""

from __future__ import annotations

import torch

from support.parity import Case, Reference, randn


def jukebox(t, p):
    dims = tuple(range(1, t["input"].dim()))

    def amplitude(x):
        z = torch.fft.fftn(x, s=p.get("fft_signal_size"), dim=dims, norm=p.get("fft_norm", "ortho"))
        return torch.sqrt(z.real ** 2 + z.imag ** 2)

    loss = (amplitude(t["target"]) - amplitude(t["input"])) ** 2
    red = p.get("reduction", "mean")
    return loss.mean() if red == "mean" else (loss.sum() if red == "sum" else loss)


REFERENCES = {"jukebox_loss": Reference(jukebox, None, exact=False)}

CASES = {
    "jukebox_loss": [
        Case("2d", lambda dt: {"input": randn(2, 3, 4, 5, dtype=dt, seed=1), "target": randn(2, 3, 4, 5, dtype=dt, seed=2)}),
        Case("1d-padded-forward", lambda dt: {"input": randn(2, 2, 5, dtype=dt, seed=3), "target": randn(2, 2, 5, dtype=dt, seed=4)},
             params={"fft_signal_size": [3, 8], "fft_norm": "forward"}),
        Case("3d-cropped", lambda dt: {"input": randn(1, 2, 3, 4, 3, dtype=dt, seed=5),
                                       "target": randn(1, 2, 3, 4, 3, dtype=dt, seed=6)},
             params={"fft_signal_size": [2, 2, 3, 2], "fft_norm": "backward"}),
    ],
}
