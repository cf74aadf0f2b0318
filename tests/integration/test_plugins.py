"""Operator plugins: a package from tests/plugins installed and served over gRPC."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from lossd.client import Client, Internal, LossdError, NotFound, build_request
from support.servers import ServedProcess
from support.training import small_spec

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


# -- a plugin that misbehaves (tests/plugins/lossd_faulty_plugin): refused at start, or contained per call --------

FAULTY = Path(__file__).resolve().parents[1] / "plugins" / "lossd_faulty_plugin"
#: What a loss's code may raise that would have stopped the server (or, StopIteration, hung a pooled call).
ESCAPING = ["SystemExit", "KeyboardInterrupt", "GeneratorExit", "StopIteration", "CancelledError"]


@pytest.fixture(scope="module")
def faulty_site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment that makes the faulty plugin's entry points visible (what ``pip install --target`` would
    write: the dist-info only; the package is imported from tests/plugins), as tests/support/gated_loss.py does."""
    sys.path.insert(0, str(FAULTY))
    try:
        from lossd_faulty_plugin import ENTRY_POINTS
    finally:
        sys.path.remove(str(FAULTY))
    dist = tmp_path_factory.mktemp("faulty-site") / "lossd_faulty_plugin-1.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lossd-faulty-plugin\nVersion: 1.0.0\n")
    (dist / "entry_points.txt").write_text("[lossd.losses]\n" + "".join(f"{k} = {v}\n" for k, v in ENTRY_POINTS.items()))
    path = [str(dist.parent), str(FAULTY), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in path if p)}


def _request(loss: str, n: int, **params: object) -> Any:
    x = np.linspace(-1, 1, n, dtype=np.float32)
    return build_request(loss, inputs={"input": x, "target": np.zeros_like(x)}, params=params)[0]


def test_a_misbehaving_plugin_neither_stops_nor_holds_the_server(faulty_site: dict[str, str], tmp_path: Path) -> None:
    """Found by the plugin audit: sys.exit() in a plugin module, or SystemExit / KeyboardInterrupt / GeneratorExit
    from a plugin loss on any path, stopped the server; StopIteration hung a pooled call to its deadline; a
    plugin loss that sleeps held the event loop on every small call; a bad Param default broke ListLosses; an
    alias 'torch.nn.' took loss=""; a list param changed by the loss leaked into the next call."""
    with ServedProcess.start(tmp_path, "--plugins", "all", env=faulty_site) as served, Client(served.address) as c:
        log = "".join(served.log)
        assert "plugin 'exits' (lossd_faulty_plugin.exits) failed to load: SystemExit(3)" in log
        assert "plugin 'badparam' (lossd_faulty_plugin.bad_param) failed to load: loss 'bad_default_loss'" in log
        assert "plugin 'emptyalias' (lossd_faulty_plugin.empty_alias) failed to load" in log
        names = {i.name for i in c.list_losses()}  # every loss publishes
        assert {"raising_loss", "sleepy_loss", "appending_loss", "mse_loss"} <= names
        assert not names & {"fine_loss", "bad_default_loss", "empty_alias_loss"}
        with pytest.raises(LossdError) as err:
            c.evaluate("", [1.0], [0.0])
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT

        for what in ESCAPING:  # on the event loop's size and on the pool's; the forward and a custom backward
            for loss, n in (("raising_loss", 2), ("raising_loss", 8192), ("raising_backward_loss", 2)):
                with pytest.raises(Internal, match="see server log"):
                    c.evaluate_request(_request(loss, n, what=what), timeout=20)
            stream = list(c.evaluate_stream([_request("raising_loss", 2, what=what), _request("mse", 2)],
                                            raise_on_error=False, timeout=20))
            batch = c.evaluate_many([_request("raising_loss", 2, what=what), _request("mse", 2)], timeout=20)
            for outcomes in (stream, batch):
                assert isinstance(outcomes[0], Internal) and outcomes[1].value == 1.0, what  # type: ignore[union-attr]
            with pytest.raises(Internal, match="see server log"):  # TrainJob's submission check runs the loss
                c.train(small_spec(loss={"name": "raising_loss", "params": {"what": what}}), progress=False)
        assert served.proc.poll() is None and c.evaluate("mse", [3.0], [0.0]).value == 9.0
        assert "loss raising_loss raised SystemExit: raised by a plugin loss" in "".join(served.log)

        # A small call of a sleeping plugin loss runs on the pool: health checks and other calls go on meanwhile.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            sleeping = pool.submit(c.evaluate_request, _request("sleepy_loss", 2, seconds=1.5), timeout=20)
            time.sleep(0.3)
            start = time.monotonic()
            assert c.health() == "SERVING" and c.evaluate("mse", [1.0], [0.0]).value == 1.0
            assert time.monotonic() - start < 0.8 and not sleeping.done()
            assert sleeping.result().value == 2.0

        values = [c.evaluate_request(_request("appending_loss", 2, weights=[1.0])).value for _ in range(3)]
        assert values == [2.0, 2.0, 2.0]  # the planned signature's list is not the loss's to keep


def test_a_plugin_named_in_plugins_that_is_refused_stops_the_start(faulty_site: dict[str, str], tmp_path: Path) -> None:
    """Found by the plugin audit: a plugin named explicitly that failed to import still started the server
    without its losses (and one calling sys.exit() stopped it with no line naming it). `all` logs and goes on
    (above); a plugin named in --plugins is as a name not installed: one line, exit 2."""
    env = {**os.environ, **faulty_site, "LOSSD_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "lossd.server", "--port", "0", "--data-dir", str(tmp_path / "d"),
                           "--plugins", "faulty,exits,badparam"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.splitlines()[-1]
    assert line.startswith("lossd serve: error: --plugins 'faulty,exits,badparam' (env LOSSD_PLUGINS): "), line
    assert "plugin 'exits' (lossd_faulty_plugin.exits) failed to load: SystemExit(3)" in line
    assert "plugin 'badparam' (lossd_faulty_plugin.bad_param) failed to load: loss 'bad_default_loss'" in line
    assert "'faulty'" not in line
