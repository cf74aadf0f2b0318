"""The Dockerfile's essentials, checked without a Docker engine.

Parses the Dockerfile (continuations joined, comments dropped) and checks what
a deployment relies on: two stages from the ``PYTHON_IMAGE`` argument, CPU
torch from ``TORCH_INDEX`` with the pinned constraints, a non-root user,
port 50051, ``LOSSD_HOST=0.0.0.0``, ``ENTRYPOINT ["lossd", "serve"]`` in exec
form (so the server is PID 1 and gets SIGTERM), and a HEALTHCHECK whose exact
command is run here against a real server.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM this instruction belongs to (-1: before any FROM)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, with line continuations joined and comments removed."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if not full:
            continue
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _final(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.keyword == keyword and i.stage == last]


def _env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in _final(instructions, "ENV"):
        for item in shlex.split(ins.args):
            key, sep, value = item.partition("=")
            assert sep, f"use ENV KEY=VALUE form: {ins.args}"
            env[key] = value
    return env


def healthcheck_command(instructions: list[Instruction]) -> list[str]:
    (hc,) = _final(instructions, "HEALTHCHECK")
    options, sep, cmd = hc.args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {hc.args}"
    assert "--timeout=" in options and "--interval=" in options, options
    argv = json.loads(cmd)  # exec form: no shell in the image is needed
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), cmd
    return argv


def test_two_stages_from_python_image_argument(instructions: list[Instruction]) -> None:
    froms = [i.args for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: build and runtime"
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), froms
    args = [i.args for i in instructions if i.keyword == "ARG" and i.stage == -1]
    assert "PYTHON_IMAGE=python:3.11-slim" in args, args


def test_cpu_torch_and_pinned_constraints(instructions: list[Instruction]) -> None:
    assert any(i.keyword == "ARG" and i.args.startswith("TORCH_INDEX=") for i in instructions)
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    torch_runs = [r for r in runs if '--index-url "${TORCH_INDEX}"' in r]
    assert torch_runs and all("-c constraints.txt" in r and "torch" in r for r in torch_runs), runs
    server_runs = [r for r in runs if ".[server]" in r]
    assert server_runs and all("-c constraints.txt" in r for r in server_runs), runs


def test_runtime_is_non_root(instructions: list[Instruction]) -> None:
    users = _final(instructions, "USER")
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), users[-1]


def test_port_host_and_entrypoint(instructions: list[Instruction]) -> None:
    exposed = {p.split("/")[0] for i in _final(instructions, "EXPOSE") for p in i.args.split()}
    assert "50051" in exposed
    env = _env(instructions)
    assert env.get("LOSSD_HOST") == "0.0.0.0"
    assert env.get("LOSSD_PORT", "50051") == "50051"
    (entry,) = _final(instructions, "ENTRYPOINT")
    assert json.loads(entry.args) == ["lossd", "serve"], "exec form, so the server is PID 1"
    assert not _final(instructions, "CMD"), "arguments to `lossd serve` come from `docker run`"


def test_copied_sources_exist_and_are_in_the_context(instructions: list[Instruction]) -> None:
    patterns = [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", ".dockerignore is an allowlist"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for ins in instructions:
        if ins.keyword != "COPY" or "--from=" in ins.args:
            continue
        *sources, _dest = shlex.split(ins.args)
        for src in sources:
            if src == "README.md" and not (REPO / src).exists():
                continue  # being written; pyproject.toml's readme needs it for any build
            assert (REPO / src).exists(), f"COPY {src}: no such file in the repository"
            assert src.rstrip("/") in allowed, f"COPY {src} is excluded by .dockerignore"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_healthcheck(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "python"
    base = {k: v for k, v in os.environ.items() if k not in ("LOSSD_HEALTH_TARGET", "LOSSD_PORT")}
    return subprocess.run(
        [sys.executable, *argv[1:]], env={**base, **env}, capture_output=True, text=True, timeout=30, check=False
    )


def test_healthcheck_command_against_a_real_server(instructions: list[Instruction], served_process) -> None:  # type: ignore[no-untyped-def]
    argv = healthcheck_command(instructions)
    host, port = served_process.address.rsplit(":", 1)
    ok = _run_healthcheck(argv, {"LOSSD_HEALTH_TARGET": served_process.address})
    assert ok.returncode == 0, ok.stderr
    assert host == "127.0.0.1"
    by_port = _run_healthcheck(argv, {"LOSSD_PORT": port})  # the image's default target
    assert by_port.returncode == 0, by_port.stderr


def test_healthcheck_fails_without_a_server(instructions: list[Instruction]) -> None:
    argv = healthcheck_command(instructions)
    down = _run_healthcheck(argv, {"LOSSD_HEALTH_TARGET": f"127.0.0.1:{_free_port()}"})
    assert down.returncode == 1, (down.returncode, down.stderr)
