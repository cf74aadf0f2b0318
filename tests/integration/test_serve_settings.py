"""``python -m lossd.server`` (a real process) refuses a setting that does not parse: exit 2 and one
line naming the variable (tests/unit/test_config.py covers every setting through ``main``)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_lossd_serve_exits_2_naming_the_variable() -> None:
    env = {**os.environ, "LOSSD_REFLECTION": "nope", "LOSSD_PORT": "0"}
    done = subprocess.run([sys.executable, "-m", "lossd.server"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "lossd serve: error: LOSSD_REFLECTION='nope': not a boolean; use 1/0, true/false, yes/no or on/off"]
