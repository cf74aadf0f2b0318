"""``lossd serve`` refuses to start on a busy address or a data directory in use: exit status 2 and
one line saying why (no traceback; JSON with ``--log-format json``), having given back what it had taken;
and a running server does not share its port (SO_REUSEPORT off)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support.servers import ServedProcess

pytestmark = pytest.mark.slow


def _serve(tmp_path: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOSSD_DEVICE": "cpu", "PYTHONUNBUFFERED": "1", **env_vars}
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
    ("lossd serve", ["--max-loss-work", str(10**20)], {},
     "argument --max-loss-work (env LOSSD_MAX_LOSS_WORK): '100000000000000000000': must be a whole number from 1 "
     "to 1099511627776 (2^40"),
    ("python -m lossd.server", [], {"LOSSD_MAX_LOSS_WORK": str(2**40 + 1)},
     "LOSSD_MAX_LOSS_WORK='1099511627777': must be a whole number from 1 to 1099511627776 (2^40"),
]


def test_a_setting_out_of_range_exits_2_with_one_line(tmp_path: Path) -> None:
    """README (Configuration): a value that does not parse stops the server at start, exit 2, one line naming
    it; these were a traceback (exit 1), a port taken modulo 65536, or a server whose jobs never ran. The
    processes run side by side."""
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


def _damaged_stores(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Data directories whose ``jobs.sqlite3`` SQLite refuses, with the start of what the refusal says of it."""
    from lossd.server.training._store import SQLiteJobStore

    garbage, truncated, folder = (tmp_path / name for name in ("garbage", "truncated", "folder"))
    garbage.mkdir()
    (garbage / "jobs.sqlite3").write_bytes(os.urandom(8192))
    truncated.mkdir()
    store = SQLiteJobStore(truncated / "jobs.sqlite3")  # a real store, cut short (a copy that stopped midway)
    store.create_job("0123456789ab", "cut", b"", epochs=1, total_steps=1, encoding="values")
    store.close()
    whole = (truncated / "jobs.sqlite3").read_bytes()
    (truncated / "jobs.sqlite3").write_bytes(whole[:12000])
    (folder / "jobs.sqlite3").mkdir(parents=True)
    return {
        "file is not a database": (garbage, "is not a lossd job store or is damaged"),
        "database disk image is malformed": (truncated, "is not a lossd job store or is damaged"),
        "unable to open database file": (folder, "cannot use"),
    }


def test_a_damaged_job_store_exits_2_with_one_line(tmp_path: Path) -> None:
    """A ``jobs.sqlite3`` that is not a database, a truncated one, a folder in its place: one line naming
    --data-dir, the file and SQLite's message, exit 2 (was a 35-line traceback, exit 1). Side by side."""
    cases = _damaged_stores(tmp_path)
    started = {sqlite: subprocess.Popen(
        [sys.executable, "-m", "lossd.server", "--plugins", "none", "--port", "0", "--data-dir", str(data)],
        cwd=tmp_path, env={**os.environ, "LOSSD_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for sqlite, (data, _) in cases.items()}
    try:
        for sqlite, proc in started.items():
            data, says = cases[sqlite]
            out = proc.communicate(timeout=120)[0]
            lines = out.strip().splitlines()
            assert (proc.returncode, len(lines)) == (2, 1), (sqlite, out)
            assert "Traceback" not in out
            assert lines[0].startswith(f"lossd serve: error: --data-dir {data} (env LOSSD_DATA_DIR): "), lines
            assert says in lines[0] and str(data / "jobs.sqlite3") in lines[0], lines
            assert f"(SQLite: {sqlite})" in lines[0] and lines[0].endswith("move it aside to start with an empty "
                                                                           "store"), lines
    finally:
        for proc in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def test_a_refused_create_server_gives_back_its_port_metrics_endpoint_and_threads(tmp_path: Path) -> None:
    """A start refused after the gRPC port is bound and the metrics endpoint serves (here: a data directory
    in use, found when training is added) gives all of it back before it raises: the metrics endpoint
    answered on, and its thread, the bound port and the evaluation threads outlived the refusal."""
    import asyncio
    import threading

    from lossd._settings import SettingError
    from lossd.server import ServerConfig, create_server

    data = str(tmp_path / "data")

    def config(**kw: Any) -> ServerConfig:
        return ServerConfig(host="127.0.0.1", device="cpu", plugins="none", data_dir=data, **kw)

    async def refused_start() -> tuple[int, int, set[int]]:
        first = await create_server(config(port=0))  # holds the data directory
        try:
            before = {t.ident for t in threading.enumerate()}
            port, metrics_port = _free_port(), _free_port()
            with pytest.raises(SettingError, match="is in use by another lossd server"):
                await create_server(config(port=port, metrics_port=metrics_port))
            return port, metrics_port, before
        finally:
            await first.close()

    port, metrics_port, before = asyncio.run(refused_start())

    def left() -> list[str]:
        return [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]

    deadline = time.monotonic() + 10  # the evaluation threads end once they see the pool shut down
    while left() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left(), f"threads the refused start left running: {left()}"
    for taken in (port, metrics_port):
        with socket.socket() as probe:  # bound as gRPC and the metrics endpoint bind: no SO_REUSEPORT
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", taken))  # OSError (in use) when the refusal kept it


def test_with_json_logs_from_the_environment_a_bad_variable_is_one_json_line(tmp_path: Path) -> None:
    """LOSSD_LOG_FORMAT=json, as a container sets it: a bad LOSSD_* value is refused as the flags are read,
    before ``--log-format`` was known, and the line was plain text."""
    refused = _serve(tmp_path, "--data-dir", str(tmp_path / "d"), LOSSD_LOG_FORMAT="json", LOSSD_WORKERS="0")
    assert refused.returncode == 2 and refused.stdout == "", refused
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["level"] == "ERROR" and "LOSSD_WORKERS" in record["message"], record


def test_with_json_logs_a_refusal_is_one_json_line(tmp_path: Path) -> None:
    """``--log-format json``: the refusal's one line is JSON too (it was plain text among JSON lines)."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        refused = _serve(tmp_path, "--port", str(port), "--log-format", "json", "--data-dir", str(tmp_path / "d"))
    assert refused.returncode == 2, refused
    assert refused.stdout == "", refused
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["level"] == "ERROR" and record["logger"] == "lossd.server", record
    assert record["message"].startswith(f"lossd serve: error: cannot listen on 127.0.0.1:{port}: the address is "
                                        "already in use"), record


def test_a_host_it_cannot_bind_is_refused_in_one_line_with_port_0_too(tmp_path: Path) -> None:
    """``--port 0`` on an address this machine does not have (TEST-NET-3): lossd's one line, before gRPC
    tries and prints its own (``E… add_port.cc … Failed to add port``): the bind probe skipped port 0."""
    refused = _serve(tmp_path, "--host", "203.0.113.7", "--port", "0", "--data-dir", str(tmp_path / "d"),
                     "--log-level", "error",  # not the warning about a token over plaintext
                     LOSSD_TOKEN="a-token-for-a-host-beyond-loopback")
    lines = (refused.stdout + refused.stderr).strip().splitlines()
    assert refused.returncode == 2, refused
    assert len(lines) == 1, lines
    assert lines[0].startswith("lossd serve: error: cannot listen on 203.0.113.7:0: "), lines
    assert not (tmp_path / "d").exists()  # refused before anything was made


def test_a_bracketed_ipv6_host_with_port_0_serves(tmp_path: Path) -> None:
    """gRPC's ``[::1]`` form of a host passes the bind probe (which port 0 now goes through too)."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            pass
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with ServedProcess.start(tmp_path, "--host", "[::1]", "--plugins", "none",
                             "--data-dir", str(tmp_path / "d")) as served:
        assert served.address.startswith("[::1]:"), served.address


#: A plugin whose import holds the start (``<gate>/loading``, then waits for ``<gate>/go``): a moment inside
#: ``main`` (logging configured, the event loop running) before the signal handlers are in place.
_START_GATE_PLUGIN = '''
import os, time
from pathlib import Path

import torch

from lossd.server.losses import Input, register_loss

_gate = Path(os.environ["LOSSD_TEST_START_GATE"])
(_gate / "loading").touch()
_deadline = time.monotonic() + 60
while not (_gate / "go").exists() and time.monotonic() < _deadline:
    time.sleep(0.005)


@register_loss("start_gate_mse_loss", inputs=(Input("input", "prediction", differentiable=True, doc="p"),
                                               Input("target", "target", doc="t")),
               description="mse_loss", example=lambda dt: {"input": torch.ones(2, dtype=dt),
                                                           "target": torch.zeros(2, dtype=dt)})
def start_gate_mse_loss(input, target):
    return torch.nn.functional.mse_loss(input, target)
'''


def test_ctrl_c_while_starting_exits_130_with_one_line(tmp_path: Path) -> None:
    """SIGINT before the server has installed its signal handlers (here: while a plugin loads) stops the start
    with one line (JSON with ``--log-format json``) and exit status 130; it was a KeyboardInterrupt traceback."""
    started = {}
    for fmt in ("plain", "json"):
        root = tmp_path / fmt
        gate, site = root / "gate", root / "site"
        gate.mkdir(parents=True)
        dist = site / "lossd_start_gate-1.0.0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lossd-start-gate\nVersion: 1.0.0\n")
        (dist / "entry_points.txt").write_text("[lossd.losses]\nstart_gate = lossd_start_gate\n")
        (site / "lossd_start_gate.py").write_text(_START_GATE_PLUGIN)
        env = {**os.environ, "LOSSD_DEVICE": "cpu", "PYTHONUNBUFFERED": "1", "LOSSD_TEST_START_GATE": str(gate),
               "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}
        started[fmt] = gate, subprocess.Popen(
            [sys.executable, "-m", "lossd.server", "--port", "0", "--plugins", "start_gate", "--log-format", fmt,
             "--log-level", "warning", "--data-dir", str(root / "data")],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for gate, proc in started.values():
            deadline = time.monotonic() + 120
            while not (gate / "loading").exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert (gate / "loading").exists(), proc.communicate(timeout=30)
            proc.send_signal(signal.SIGINT)
            (gate / "go").touch()
        for fmt, (_, proc) in started.items():
            out, err = proc.communicate(timeout=120)
            lines = (out + err).strip().splitlines()
            assert proc.returncode == 130, (fmt, proc.returncode, out, err)
            assert "Traceback" not in out + err, (fmt, out, err)
            assert len(lines) == 1, (fmt, lines)
            said = json.loads(lines[0])["message"] if fmt == "json" else lines[0]
            assert said.startswith("lossd serve: interrupted"), (fmt, lines)
            assert "listening on" not in out
    finally:
        for _, proc in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("command", [(sys.executable, "-m", "lossd.server"), ("lossd", "serve")])
def test_ctrl_c_while_its_modules_load_exits_130_with_one_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    """A Ctrl-C while torch and the server's modules load (most of a start's seconds) came before ``main``'s
    handler: an import traceback and status -2. It is the one line and exit 130 too."""
    from lossd.server._logging import STARTUP_INTERRUPTED

    if command[0] == "lossd":
        command = (str(Path(sys.executable).with_name("lossd")), "serve")
    env = {**os.environ, "LOSSD_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*command, "--port", "0", "--data-dir", str(tmp_path / "data")], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Inside the imports (torch alone takes over a second), past what comes before the deferral: the
    # interpreter's start, and for the console script its import of the CLI (0.2 s here)
    time.sleep(0.4 if command[0] == sys.executable else 1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in out + err, (proc.returncode, out, err)
    assert (out + err).strip().splitlines() == [STARTUP_INTERRUPTED], (out, err)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_failed_tls_handshakes_leave_json_logs_json(tmp_path: Path, entry: str) -> None:
    """docs/deployment.md: with --log-format json every line is one JSON object. gRPC logged each failed TLS
    handshake at INFO in plain text, and anyone who can connect can fail one (200 lines in 0.05 s, an audit,
    2026-12-06): the server's entry points set GRPC_VERBOSITY=ERROR before gRPC loads, unless it is set."""
    from support.certs import make_pki

    pki = make_pki(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    proc = subprocess.Popen([*ENTRY_POINTS[entry], "--plugins", "none", "--port", str(port), "--log-format", "json",
                             "--data-dir", str(tmp_path / "data"), "--tls-cert", str(pki.server_cert),
                             "--tls-key", str(pki.server_key), "--insecure"], cwd=tmp_path,
                            env={**env, "LOSSD_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:  # until it listens
            lines.append(line)
            if "listening on" in line:
                break
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GARBAGE\r\n\r\n")
                sock.recv(64)  # the server's answer: a TLS alert, or the close
        proc.send_signal(signal.SIGTERM)
        lines += proc.communicate(timeout=60)[0].splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, lines
    plain = [line for line in lines if line.strip() and not line.startswith("{")]
    assert plain == [], plain
    assert all(json.loads(line) for line in lines if line.strip())


def test_the_server_raises_its_open_files_limit_to_the_hard_one(tmp_path: Path) -> None:
    """Every connection is a file: at a soft limit of 1024 (systemd's default) a caller without the token held
    them all with idle connections and health checks timed out (an audit, 2026-12-06). The server raises its
    soft limit to the hard one at start."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit here is {hard}: nothing to raise")
    expected = (1 << 20) if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    proc = subprocess.Popen([*ENTRY_POINTS["python -m lossd.server"], "--plugins", "none", "--port", "0",
                             "--data-dir", str(tmp_path / "data")], cwd=tmp_path, preexec_fn=low,
                            env={**os.environ, "LOSSD_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "listening on" in line:
                break
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        (row,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
        assert row.split()[3] == str(expected), row
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
