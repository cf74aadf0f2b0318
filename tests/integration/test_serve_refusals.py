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
