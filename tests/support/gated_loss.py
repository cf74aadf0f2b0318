"""An EvaluateLoss whose end the test decides: the ``gated_mse_loss`` plugin
(tests/plugins/lossd_gated_plugin) installed for one ``python -m lossd.server`` process.

A drain test needs a call that is provably still running when it sends SIGTERM, and one that
provably outlasts the grace period. A loss sized to take so many seconds depends on the machine's
load (too fast on an idle machine, too slow on a loaded one); this one computes when the test
opens its gate, and says when it has started (not the server's CPU time).

>>> import tempfile
>>> gate = LossGate(Path(tempfile.mkdtemp()))
>>> sorted(gate.env), gate.entered(), gate.request().loss
(['LOSSD_PLUGINS', 'LOSSD_TEST_GATE', 'PYTHONPATH'], False, 'gated_mse_loss')
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lossd.client import build_request
from lossd.v1 import lossd_pb2

from .procstat import wait_for

__all__ = ["LossGate"]

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "plugins" / "lossd_gated_plugin"

#: Elements of each input: 2 × 64 KiB of float32, over the server's inline limit (16 KiB), so the
#: evaluation runs on the thread pool and the event loop keeps answering while it waits.
SIZE = 16_384


class LossGate:
    """The gate of ``gated_mse_loss`` in the directory ``root/gate``, and the environment a
    :class:`~support.servers.ServedProcess` needs to serve that loss (``env=gate.env``)."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "gate"
        self.dir.mkdir()
        site = root / "gate-site"  # what `pip install --target` would write: the entry point only
        dist = site / "lossd_gated_plugin-1.0.0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lossd-gated-plugin\nVersion: 1.0.0\n")
        (dist / "entry_points.txt").write_text("[lossd.losses]\ngated = lossd_gated_plugin\n")
        path = [str(site), str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")]
        self.env = {"PYTHONPATH": os.pathsep.join(p for p in path if p), "LOSSD_PLUGINS": "gated",
                    "LOSSD_TEST_GATE": str(self.dir)}

    @staticmethod
    def arrays() -> dict[str, np.ndarray]:
        """The inputs of :meth:`request`."""
        rng = np.random.default_rng(0)
        return {"input": rng.standard_normal(SIZE).astype(np.float32),
                "target": rng.standard_normal(SIZE).astype(np.float32)}

    def request(self) -> lossd_pb2.EvaluateLossRequest:
        """A ``gated_mse_loss`` request (its value: torch's ``mse_loss`` of :meth:`arrays`)."""
        request, _ = build_request("gated_mse_loss", inputs=self.arrays())
        return request

    def entered(self) -> bool:
        """Whether an evaluation has started (and waits at the gate, unless it is open)."""
        return (self.dir / "entered").exists()

    def wait_entered(self, timeout: float) -> bool:
        """Wait until an evaluation has started; False after ``timeout`` seconds."""
        return wait_for(self.entered, timeout, 0.005)

    def open(self) -> None:
        """Let every evaluation waiting at the gate (and every later one) compute."""
        (self.dir / "open").touch()
