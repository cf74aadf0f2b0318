"""``lossd serve`` refuses to start on a busy address or a data directory in use: exit status 2 and
one line saying why (no traceback); and a running server does not share its port (SO_REUSEPORT off)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from support.servers import ServedProcess

pytestmark = pytest.mark.slow


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOSSD_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "lossd.server", "--plugins", "none", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_busy_address_and_a_locked_data_dir_exit_2_with_one_line(tmp_path: Path) -> None:
    with ServedProcess.start(tmp_path, "--data-dir", str(tmp_path / "a"), "--plugins", "none") as served:
        host, port = served.address.rsplit(":", 1)

        # The running server's port cannot be shared, even by a socket that asks for SO_REUSEPORT.
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with pytest.raises(OSError):
                other.bind((host, int(port)))

        busy = _serve(tmp_path, "--port", port, "--data-dir", str(tmp_path / "b"))
        lines = (busy.stdout + busy.stderr).strip().splitlines()
        assert busy.returncode == 2, busy
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"lossd serve: error: cannot listen on 127.0.0.1:{port}: the address is already "
                                   "in use"), lines

        locked = _serve(tmp_path, "--port", "0", "--data-dir", str(tmp_path / "a"))
        lines = (locked.stdout + locked.stderr).strip().splitlines()
        assert locked.returncode == 2, locked
        assert len(lines) == 1, lines
        assert "is in use by another lossd server" in lines[0] and f"pid {served.proc.pid}" in lines[0], lines
        assert lines[0].startswith("lossd serve: error: --data-dir "), lines
        assert served.proc.poll() is None  # the first server goes on


#: ``lossd serve`` and ``python -m lossd.server``: the same main().
ENTRY_POINTS = {"lossd serve": [str(Path(sys.executable).parent / "lossd"), "serve"],
                "python -m lossd.server": [sys.executable, "-m", "lossd.server"]}


#: Settings out of range, from a flag or a variable: (entry point, arguments, environment, the line's start).
OUT_OF_RANGE = [
    ("lossd serve", ["--log-level", "bogus"], {},
     "argument --log-level (env LOSSD_LOG_LEVEL): 'bogus': not a logging level"),
    ("python -m lossd.server", ["--log-level", "bogus"], {},
     "argument --log-level (env LOSSD_LOG_LEVEL): 'bogus': not a logging level"),
    ("python -m lossd.server", ["--workers", "0"], {},
     "argument --workers (env LOSSD_WORKERS): '0': must be a whole number >= 1"),
    ("python -m lossd.server", ["--metrics-port", "70000"], {},
     "argument --metrics-port (env LOSSD_METRICS_PORT): '70000': must be a whole number from 0 to 65535"),
    ("lossd serve", ["--port", "70000"], {},
     "argument --port (env LOSSD_PORT): '70000': must be a whole number from 0 to 65535"),
    ("python -m lossd.server", ["--port", "-1"], {},
     "argument --port (env LOSSD_PORT): '-1': must be a whole number from 0 to 65535"),
    ("lossd serve", [], {"LOSSD_MAX_JOBS": "0"}, "LOSSD_MAX_JOBS='0': must be a whole number >= 1"),
    ("python -m lossd.server", [], {"LOSSD_MAX_MESSAGE_BYTES": "0"},
     "LOSSD_MAX_MESSAGE_BYTES='0': must be a whole number from 1 to 2147483647"),
    ("python -m lossd.server", [], {"LOSSD_WORKERS": "-1"}, "LOSSD_WORKERS='-1': must be a whole number >= 1"),
]


def test_a_setting_out_of_range_exits_2_with_one_line(tmp_path: Path) -> None:
    """README (Configuration): a value that does not parse stops the server at start, exit 2, one line naming
    it; these were a traceback (exit 1), a port taken modulo 65536, or a server whose jobs never ran. The
    processes run side by side (each imports torch before it parses its arguments)."""
    started = []
    for k, (entry, args, env, _) in enumerate(OUT_OF_RANGE):
        data = tmp_path / f"data{k}"
        started.append((data, subprocess.Popen(
            [*ENTRY_POINTS[entry], "--plugins", "none", "--data-dir", str(data), *args], cwd=tmp_path,
            env={**os.environ, "LOSSD_DEVICE": "cpu", "PYTHONUNBUFFERED": "1", **env},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    try:
        for (entry, args, env, names), (data, proc) in zip(OUT_OF_RANGE, started):
            out = proc.communicate(timeout=120)[0]
            lines = out.strip().splitlines()
            assert (proc.returncode, len(lines)) == (2, 1), (entry, args, env, out)
            assert lines[0].startswith(f"lossd serve: error: {names}"), (entry, args, env, lines)
            assert not data.exists()  # refused before anything was made
    finally:
        for _, proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_busy_metrics_port_exits_2_with_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        refused = _serve(tmp_path, "--port", "0", "--metrics-port", str(port), "--data-dir", str(tmp_path / "data"))
    lines = (refused.stdout + refused.stderr).strip().splitlines()
    assert refused.returncode == 2, refused
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"lossd serve: error: could not serve metrics on 127.0.0.1:{port} (--metrics-port)")
    # refused before the job store opened: it would have resumed (and then interrupted) the jobs waiting there
    assert not (tmp_path / "data" / "jobs.sqlite3").exists()
