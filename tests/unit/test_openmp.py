"""OpenMP's wait policy for the server process (lossd.server._openmp), and the lazy ``lossd.server``
package that lets the entry point set it before torch loads. The server itself is run in
tests/integration/test_openmp_policy.py."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

import lossd.server
from lossd.server._openmp import OPENMP_SETTINGS, OPENMP_VARIABLES, openmp_policy, quiet_openmp


def test_sets_the_passive_policy_before_torch_loads() -> None:
    env: dict[str, str] = {"PATH": "/bin"}
    assert quiet_openmp(env, torch_loaded=False)
    assert env == {"PATH": "/bin", **OPENMP_SETTINGS}
    assert openmp_policy(env) == "OMP_WAIT_POLICY=PASSIVE"


@pytest.mark.parametrize("chosen", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}])
def test_an_operators_choice_wins(chosen: dict[str, str]) -> None:
    env = dict(chosen)
    assert not quiet_openmp(env, torch_loaded=False)
    assert env == chosen
    assert openmp_policy(env) == " ".join(f"{k}={v}" for k, v in chosen.items())


def test_sets_nothing_once_torch_is_loaded() -> None:
    """OpenMP read its environment when torch loaded: setting it now would claim a policy it does not run."""
    import torch  # noqa: F401 - this test's premise

    env: dict[str, str] = {}
    assert not quiet_openmp(env)
    assert env == {}
    assert openmp_policy(env) is None


def test_importing_the_server_package_does_not_import_torch() -> None:
    code = ("import sys, lossd.server, lossd.server._openmp, lossd.client.cli; "
            "print('torch' in sys.modules); from lossd.server import ServerConfig; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


def test_the_package_names_resolve_on_first_use() -> None:
    from lossd.server._app import ServerConfig, create_server
    from lossd.server.evaluation import evaluate
    from lossd.server.losses import REGISTRY

    assert (lossd.server.ServerConfig, lossd.server.create_server) == (ServerConfig, create_server)
    assert (lossd.server.evaluate, lossd.server.REGISTRY) == (evaluate, REGISTRY)
    assert all(getattr(lossd.server, name) is not None for name in lossd.server.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        lossd.server.nothing  # noqa: B018


def test_the_server_warns_when_it_runs_without_a_policy(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """``main()`` called after torch was imported (no entry point set the policy): a warning saying what to set."""
    from lossd.server import _app

    for name in OPENMP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_app, "log", logging.getLogger("test_openmp"))
    with caplog.at_level(logging.INFO, logger="test_openmp"):
        _app._log_openmp_policy()
        monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
        _app._log_openmp_policy()
    (warning, info) = caplog.records
    assert warning.levelno == logging.WARNING and "set OMP_WAIT_POLICY=PASSIVE" in warning.getMessage()
    assert info.levelno == logging.INFO and info.getMessage() == "OpenMP wait policy: GOMP_SPINCOUNT=1000"
