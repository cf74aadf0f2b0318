"""Operator plugins: a package from tests/plugins installed and served over gRPC."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lossd.client import Client, NotFound
from support.servers import ServedProcess

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "lossd_example_plugin"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(PLUGIN)],
        check=True, capture_output=True, text=True,
    )
    return site


def _env(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_plugin_losses_are_served_and_listed(plugin_site: Path, tmp_path: Path) -> None:
    with ServedProcess.start(tmp_path, env=_env(plugin_site)) as served, Client(served.address) as c:
        names = {i.name: i for i in c.list_losses()}
        assert "rmse_loss" in names and "smooth_abs_loss" in names
        assert names["rmse_loss"].source.startswith("plugin lossd-example-plugin")
        x, y = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.5, 2.0, 3.0])
        r = c.evaluate("rmse", x, y)
        xl = x.clone().requires_grad_()
        expected = torch.sqrt(torch.mean((xl - y) ** 2))
        (g,) = torch.autograd.grad(expected, xl)
        assert r.value == expected.item() and torch.equal(r.grads["y_pred"], g)
        r = c.evaluate("SmoothAbsLoss", x, y, eps=0.5, reduction="sum")
        assert r.value == pytest.approx(torch.sqrt((x - y) ** 2 + 0.25).sum().item())
        # The clashing plugin is refused whole: neither of its losses is served.
        assert "harmless_loss" not in names and "my_mse" not in names
        assert c.evaluate("mse", [1.0], [0.0]).loss_name == "mse_loss"
    log = "".join(served.log)
    assert "plugin 'clashing'" in log and "names already registered: mse" in log


def test_plugins_can_be_chosen_or_disabled(plugin_site: Path, tmp_path: Path) -> None:
    with ServedProcess.start(tmp_path, "--plugins", "none", env=_env(plugin_site)) as served, Client(served.address) as c:
        with pytest.raises(NotFound):
            c.evaluate("rmse", [1.0], [0.0])
    with ServedProcess.start(tmp_path, env={**_env(plugin_site), "LOSSD_PLUGINS": "example"}) as served:
        with Client(served.address) as c:
            assert c.evaluate("rmse", [3.0], [0.0]).value == 3.0
    assert "clashing" not in "".join(served.log)
