"""The server runs torch's OpenMP with the passive wait policy (lossd.server._openmp), as OpenMP itself
reports it: ``OMP_DISPLAY_ENV=VERBOSE`` makes GNU OpenMP print the settings it read when torch loaded
it, among them how many times a worker spins after a parallel region (``GOMP_SPINCOUNT``: 300,000 by
default, 0 with the passive policy; the policy line itself says ``PASSIVE`` for the default too).
Both entry points set it before torch loads; an operator's own setting wins."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from support.procstat import wait_for
from support.servers import ServedProcess

from lossd.server._openmp import OPENMP_VARIABLES

ENTRY_POINTS = {
    "python -m lossd.server": (sys.executable, "-m", "lossd.server"),
    "lossd serve": (str(Path(sys.executable).with_name("lossd")), "serve"),
}


def _spin_count(served: ServedProcess) -> int:
    """How many times OpenMP's workers spin after a parallel region, as OpenMP printed it (OMP_DISPLAY_ENV)."""
    text = "".join(served.log)
    found = re.search(r"OPENMP DISPLAY ENVIRONMENT BEGIN.*?GOMP_SPINCOUNT = '(\d+)'", text, re.S)
    if found is None:
        pytest.skip(f"this torch's OpenMP does not report OMP_DISPLAY_ENV (not GNU OpenMP?):\n{text[-2000:]}")
    return int(found.group(1))


def _logged(served: ServedProcess, pattern: str) -> str:
    """The server's first log line matching ``pattern`` (logging is on stderr, which the log holds)."""
    def matching() -> list[str]:
        return [line for line in list(served.log) if re.search(pattern, line)]

    assert wait_for(lambda: bool(matching()), 10), f"no log line matches {pattern!r}"
    return matching()[0]


@pytest.fixture
def no_chosen_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OPENMP_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_chosen_policy")
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_the_server_runs_openmp_passive(entry: str, tmp_path: Path) -> None:
    with ServedProcess.start(tmp_path, "--data-dir", str(tmp_path / "data"), command=ENTRY_POINTS[entry],
                             env={"OMP_DISPLAY_ENV": "VERBOSE"}) as served:
        assert _spin_count(served) == 0
        assert "OpenMP wait policy: OMP_WAIT_POLICY=PASSIVE" in _logged(served, "OpenMP wait policy")


@pytest.mark.usefixtures("no_chosen_policy")
def test_an_operators_policy_wins(tmp_path: Path) -> None:
    with ServedProcess.start(tmp_path, "--data-dir", str(tmp_path / "data"),
                             env={"OMP_DISPLAY_ENV": "VERBOSE", "OMP_WAIT_POLICY": "ACTIVE"}) as served:
        assert _spin_count(served) > 300_000
        assert "OpenMP wait policy: OMP_WAIT_POLICY=ACTIVE" in _logged(served, "OpenMP wait policy")
