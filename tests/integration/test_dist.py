"""``make dist`` and a user's install: the sdist builds a wheel that installs into a fresh
virtualenv without torch and whose client and ``lossd`` command work against a real server.

The build is ``make dist``'s, once per session (the ``dist`` fixture, tests/support/dist.py: an
sdist, then the wheel from that sdist, so a file the sdist forgets fails here). The install runs in a folder that
holds an empty ``lossd/``: a regular install is not shadowed by it (README, "Installing"),
while the editable install of ``make run`` is, from the folder above a clone named
``lossd``, exactly as the README warns.
Slow (the build, shared with tests/repo/test_packaging.py, and an install: about a minute), and
part of ``make test``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from support.dist import REPO, run_checked

pytestmark = pytest.mark.slow


def test_dist_holds_an_sdist_and_a_wheel(dist: Path) -> None:
    (sdist,) = dist.glob("lossd-*.tar.gz")
    (wheel,) = dist.glob("lossd-*-py3-none-any.whl")
    assert sdist.name.removesuffix(".tar.gz") == wheel.name.split("-py3")[0]
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for required in ("pyproject.toml", "README.md", "proto/lossd/v1/lossd.proto", "client/cli.py", "server/_app.py"):
        assert required in names, f"{required} missing from the sdist"


CLIENT = textwrap.dedent(
    """
    import importlib.util, sys
    assert importlib.util.find_spec("torch") is None, "torch is installed in the client-only venv"
    import lossd, lossd.client
    from lossd.client import Client
    assert "torch" not in sys.modules, "importing lossd.client imported torch"
    with Client() as client:
        r = client.evaluate("cross_entropy", [[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]], [0, 2],
                            reduction="sum", label_smoothing=0.1)
    assert "torch" not in sys.modules, "the client imported torch"
    msg = lossd.client.encode([1.0, 2.0])
    assert (msg.dtype, list(msg.shape), len(msg.raw)) == ("float32", [2], 8), msg
    assert lossd.client.decode(msg).tolist() == [1.0, 2.0] and lossd.Client is Client
    lossd.client.AsyncClient("127.0.0.1:1")
    from lossd.client._errors import from_status_name  # google.rpc (googleapis-common-protos) is there
    assert from_status_name("INVALID_ARGUMENT", "x: y", "x").violations[0].field == "x"
    try:
        import lossd.client.torch
    except ModuleNotFoundError as e:
        assert e.name == "torch", e
    else:
        raise AssertionError("lossd.client.torch imported without torch")
    print(lossd.__version__, lossd.__file__, r.value, r.grads["y_pred"].shape)
    """
)


def test_wheel_installs_without_torch_and_its_client_works(dist: Path, served_process, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (wheel,) = dist.glob("lossd-*.whl")
    venv = tmp_path / "venv"
    # No pip inside the new venv (faster); this interpreter's pip installs into it.
    run_checked([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    py, lossd = venv / "bin" / "python", venv / "bin" / "lossd"
    run_checked([sys.executable, "-m", "pip", "--python", str(py), "install", "--disable-pip-version-check",
          "-c", str(REPO / "constraints.txt"), str(wheel)], timeout=300)
    work = tmp_path / "work"
    (work / "lossd").mkdir(parents=True)  # a folder named like the package: no shadowing
    env = {**os.environ, "LOSSD_TARGET": served_process.address}
    out = run_checked([str(py), "-c", CLIENT], timeout=120, cwd=work, env=env).stdout.split()
    assert out[0] == "0.1.0" and out[1].startswith(str(venv)), out
    assert float(out[2]) == pytest.approx(2.0986578464508057, rel=1e-6) and out[3:] == ["(2,", "3)"], out
    assert run_checked([str(lossd), "health"], timeout=60, cwd=work, env=env).stdout == "SERVING\n"
    proc = subprocess.run([str(lossd), "serve"], capture_output=True, text=True, timeout=60, cwd=work, env=env)
    assert proc.returncode == 2 and "pip install '.[server]'" in proc.stderr, proc.stderr


SHADOWED = "import lossd; from lossd import __version__; print(__version__)"


def test_editable_install_pitfall_is_as_the_readme_says(tmp_path: Path) -> None:
    """README, "Installing": with the editable install (``make run``), a Python started in the
    folder holding a clone named ``lossd`` takes that folder for the package; the clone itself,
    or a clone named otherwise, is fine."""
    import lossd

    if not Path(lossd.__file__).resolve().is_relative_to(REPO):
        pytest.skip(f"lossd is not an editable install of this clone here ({lossd.__file__})")
    (tmp_path / "lossd").symlink_to(REPO, target_is_directory=True)
    (tmp_path / "lossd-src").symlink_to(REPO, target_is_directory=True)
    shadowed = subprocess.run([sys.executable, "-c", SHADOWED], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
    assert shadowed.returncode == 1 and shadowed.stderr.splitlines()[-1] == (
        "ImportError: cannot import name '__version__' from 'lossd' (unknown location)"), shadowed.stderr
    readme = (REPO / "README.md").read_text()
    assert "from 'lossd' (unknown location)" in readme.replace("\n", " ")
    (tmp_path / "lossd").unlink()  # the clone named otherwise, and the clone itself
    for cwd in (tmp_path, REPO):
        fine = subprocess.run([sys.executable, "-c", SHADOWED], cwd=cwd, capture_output=True, text=True, timeout=60)
        assert fine.returncode == 0 and fine.stdout == f"{lossd.__version__}\n", fine.stderr
