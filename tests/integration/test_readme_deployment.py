"""The README's token and mutual-TLS setups work as written (README, "Deployment",
"Beyond loopback: a token or mutual TLS").

test_readme runs ```console blocks against one plain server; these setups need
their own servers, so this test runs their ```bash blocks itself, exactly as
written, in a scratch directory, with the venv's ``lossd`` and ``grpcurl`` first
on PATH. Conventions of those blocks:

- backslash continuations are joined; each line runs with ``bash -c``, in order;
- a ``lossd serve ...`` line starts the server in the background (the test
  waits for its "listening on" line and stops it with SIGTERM at the end: exit 0);
- ``50051`` becomes a free port, everywhere;
- a trailing ``# prints: TEXT`` means the command exits 0 and its output holds
  TEXT; ``# fails: TEXT`` means it exits non-zero and its output holds TEXT;
  any other line must exit 0.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.markdown import fenced_blocks
from support.tools import tool_env

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SETUP_HEADING = "### Beyond loopback: a token or mutual TLS"
README_PORT = "50051"


@dataclass
class Step:
    command: str
    prints: str | None = None
    fails: str | None = None
    line: int = 0

    @property
    def serves(self) -> bool:
        return self.command.startswith("lossd serve ")


def _section() -> tuple[str, int]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{SETUP_HEADING}\n")
    end = text.index("\n### ", start + 1)
    return text[start:end], text[:start].count("\n") + 1


def setups() -> dict[str, list[Step]]:
    """The steps of each setup (``token``, ``mtls``), from the README's bash blocks."""
    section, offset = _section()
    found: dict[str, list[Step]] = {}
    for block in fenced_blocks(section, "README.md"):
        if block.lang != "bash":
            continue
        before = section[: section.index(block.text)]
        name = "mtls" if before.rfind("**With mutual TLS.**") > before.rfind("**With a token.**") else "token"
        steps = found.setdefault(name, [])
        pending = ""
        for k, raw in enumerate(block.text.splitlines()):
            if raw.rstrip().endswith("\\"):
                pending += raw.rstrip()[:-1] + " "
                continue
            line, pending = pending + raw, ""
            m = re.search(r"\s+#\s*(prints|fails):\s*(.+)$", line)
            command = line[: m.start()] if m else re.sub(r"\s+#.*$", "", line)
            step = Step(" ".join(command.split()), line=offset + block.line + k)
            if m:
                setattr(step, m.group(1), m.group(2).strip())
            steps.append(step)
    return found


SETUPS = setups()


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_the_readme_shows_both_setups() -> None:
    assert set(SETUPS) == {"token", "mtls"}
    for name, steps in SETUPS.items():
        assert sum(s.serves for s in steps) == 1, name
        assert any(s.prints for s in steps) and any(s.fails for s in steps), name
        serve = next(s for s in steps if s.serves)
        assert "--host 0.0.0.0" in serve.command, "the setups show a server reachable beyond loopback"


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_setup_works_as_written(name: str, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: the README's setups use it to make the token and certificates")
    port = _free_port()
    env = tool_env()
    for key in [k for k in env if k.startswith("LOSSD_")]:
        del env[key]  # the README's commands must carry everything they need
    env.update(LOSSD_DEVICE="cpu", LOSSD_PLUGINS="none")
    server: subprocess.Popen[str] | None = None
    log: list[str] = []
    try:
        for step in SETUPS[name]:
            command = step.command.replace(README_PORT, port)
            where = f"README.md:{step.line}: {step.command}"
            if step.serves:
                server = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=tmp_path, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                assert server.stdout is not None
                for line in server.stdout:
                    log.append(line)
                    if "listening on" in line:
                        break
                else:
                    pytest.fail(f"{where}: the server did not start:\n{''.join(log)}")
                continue
            proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=120)
            output = proc.stdout + proc.stderr
            report = f"{where}\n--- exit {proc.returncode}\n{output}"
            if step.fails:
                assert proc.returncode != 0 and step.fails in output, report
            else:
                assert proc.returncode == 0, report
                if step.prints:
                    assert step.prints in proc.stdout, report
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                code = server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                raise
            rest = server.stdout.read() if server.stdout else ""
            assert code == 0, "".join(log) + rest
    token = (tmp_path / "lossd.token").read_text().strip() if name == "token" else None
    if token:
        assert len(token) == 64 and token not in "".join(log)
