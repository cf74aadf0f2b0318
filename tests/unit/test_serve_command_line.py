"""``lossd serve`` and ``python -m lossd.server`` read and check their flags and ``LOSSD_*`` variables before
torch and the server load (server/_config.py's ``read_command_line``): ``--help``, an unknown flag or a value
out of range answers in a fraction of a second, not after the two seconds torch takes to import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

#: The entry points, each run under ``-X importtime`` (every module it imports, on stderr).
ENTRY_POINTS = {
    "python -m lossd.server": ["-m", "lossd.server"],
    "lossd serve": ["-c", "import sys; from lossd.console import main; sys.exit(main())", "serve"],
}

#: (arguments, environment, exit status, what the process says: stdout's start, or stderr's one line).
CASES = {
    "unknown flag": (["--bogus"], {}, 2, "lossd serve: error: unrecognized arguments: --bogus"),
    "help": (["--help"], {}, 0, "usage: lossd serve "),
    "flag out of range": (["--port", "70000"], {}, 2,
                          "lossd serve: error: argument --port (env LOSSD_PORT): '70000': must be a whole number "
                          "from 0 to 65535 (0 picks a free one)"),
    "variable out of range": ([], {"LOSSD_WORKERS": "0"}, 2,
                              "lossd serve: error: LOSSD_WORKERS='0': must be a whole number >= 1"),
}

#: What a refusal or --help must not load: torch, and the server's layers that import it (a module of one
#: imports its package first).
HEAVY = ("torch", "lossd.server._app", "lossd.server.evaluation", "lossd.server.losses", "lossd.server.rpc",
         "lossd.server.training", "lossd.server.interceptors")


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_the_flags_are_refused_before_torch_loads(entry: str, case: str) -> None:
    args, env, status, said = CASES[case]
    proc = subprocess.run([sys.executable, "-X", "importtime", *ENTRY_POINTS[entry], *args],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    timings = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    said_lines = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    imported = {line.rpartition("|")[2].strip() for line in timings}
    assert proc.returncode == status, proc.stdout + "\n".join(said_lines)
    if status == 0:
        assert proc.stdout.startswith(said) and not said_lines, (proc.stdout, said_lines)
    else:
        assert proc.stdout == "" and said_lines == [said], said_lines
    assert "lossd.server._config" in imported  # the check below reads the imports it needs to
    loaded = sorted(set(HEAVY) & imported)
    assert not loaded, f"{entry} {' '.join(args)} imported {loaded}"
