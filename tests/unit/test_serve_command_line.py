"""``lossd serve`` and ``python -m lossd.server`` read and check their flags and ``LOSSD_*`` variables, and
their security (the exposure rule, the token and TLS files), before torch and the server load
(server/_config.py's ``read_command_line``): ``--help``, an unknown flag, a value out of range or a refused
security setting answers in a fraction of a second, not after the two seconds torch takes to import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lossd.server._security import HOW_TO_AUTHENTICATE
from support.certs import make_pki

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
    # security (server/_security.py's check_security): these loaded torch first, two seconds before the line
    "beyond loopback without authentication": (["--host", "0.0.0.0"], {}, 2,
                                               "lossd serve: error: refusing to serve on 0.0.0.0 without "
                                               "authentication: a server reachable from other machines must check "
                                               f"its callers; {HOW_TO_AUTHENTICATE}"),
    "the same from the variables": ([], {"LOSSD_HOST": "::", "LOSSD_LOG_FORMAT": "json"}, 2, "json"),
    "unreadable token file": (["--token-file", "/nonexistent/lossd.token"], {}, 2,
                              "lossd serve: error: --token-file (LOSSD_TOKEN_FILE): cannot read "
                              "'/nonexistent/lossd.token': No such file or directory"),
    "token twice": ([], {"LOSSD_TOKEN": "0123456789abcdef-twice", "LOSSD_TOKEN_FILE": "/nonexistent/lossd.token"}, 2,
                    "lossd serve: error: token: LOSSD_TOKEN and LOSSD_TOKEN_FILE (--token-file) are both set; "
                    "set one"),
    "unreadable TLS file": (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"], {}, 2,
                            "lossd serve: error: --tls-key (LOSSD_TLS_KEY): cannot read '/nonexistent/key.pem': "
                            "No such file or directory"),
}

#: The security variables, left out of the environment the entry points inherit (each case sets its own).
SECURITY_ENV = ("LOSSD_HOST", "LOSSD_TOKEN", "LOSSD_TOKEN_FILE", "LOSSD_TLS_CERT", "LOSSD_TLS_KEY",
                "LOSSD_TLS_CLIENT_CA", "LOSSD_INSECURE")

#: What a refusal or --help must not load: torch, and the server's layers that import it (a module of one
#: imports its package first).
HEAVY = ("torch", "lossd.server._app", "lossd.server.evaluation", "lossd.server.losses", "lossd.server.rpc",
         "lossd.server.training", "lossd.server.interceptors")


def _refused(entry: str, args: list[str], env: dict[str, str], status: int, said: str) -> None:
    """Run ``entry`` with ``args`` under ``-X importtime``: it exits ``status`` saying ``said`` (stdout's start for
    0, else stderr's one line; ``"json"``: one JSON line at level ERROR) and imports nothing of :data:`HEAVY`."""
    inherited = {k: v for k, v in os.environ.items() if k not in SECURITY_ENV}
    proc = subprocess.run([sys.executable, "-X", "importtime", *ENTRY_POINTS[entry], *args],
                          env={**inherited, **env}, capture_output=True, text=True, timeout=120)
    timings = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    said_lines = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    imported = {line.rpartition("|")[2].strip() for line in timings}
    assert proc.returncode == status, proc.stdout + "\n".join(said_lines)
    if status == 0:
        assert proc.stdout.startswith(said) and not said_lines, (proc.stdout, said_lines)
    elif said == "json":
        assert proc.stdout == "" and len(said_lines) == 1, said_lines
        record = json.loads(said_lines[0])
        assert record["level"] == "ERROR" and record["message"].startswith("lossd serve: error: refusing to serve "
                                                                           "on :: without authentication"), record
    else:
        assert proc.stdout == "" and said_lines == [said], said_lines
    assert "lossd.server._config" in imported  # the check below reads the imports it needs to
    loaded = sorted(set(HEAVY) & imported)
    assert not loaded, f"{entry} {' '.join(args)} imported {loaded}"


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_the_flags_are_refused_before_torch_loads(entry: str, case: str) -> None:
    _refused(entry, *CASES[case])


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_tls_files_that_do_not_match_are_refused_before_torch_loads(entry: str, tmp_path: Path) -> None:
    """A key that is not the certificate's: refused naming --tls-key, before torch loads."""
    pki = make_pki(tmp_path)
    _refused(entry, ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.client_key)], {}, 2,
             f"lossd serve: error: --tls-key (LOSSD_TLS_KEY): {str(pki.client_key)!r} is not an unencrypted PEM "
             "private key of the --tls-cert certificate (key values mismatch)")
