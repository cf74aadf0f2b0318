"""The ``lossd`` CLI by attack (an audit, 2026-12-05), against a real server: each bad input is one line
naming the argument and its rule, exit 2 (a usage error) or 1 (the output could not be written), never a
traceback, and nothing that expands or runs for long.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from support.tools import run_tool, tool_env, tool_path


def _lossd(*args: str, target: str | None, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    prefix = ["--target", target] if target else []
    return run_tool([tool_path("lossd", "pip install -e . creates it"), *prefix, *args],
                    env={**tool_env(), **(env or {})}, timeout=timeout)


def _refused(proc: subprocess.CompletedProcess[str], code: int, *parts: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])


def test_a_yaml_spec_with_aliases_is_refused_at_once(tmp_path: Path, served_process: Any) -> None:
    """9 nested levels of 10 aliases: 619 bytes that took over 20 s and 790 MB to expand."""
    lines = ["loss:", "  name: cross_entropy", "  params:", "    a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    lines += [f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    start = time.monotonic()
    proc = _lossd("train", str(bomb), "--detach", target=served_process.address)
    assert time.monotonic() - start < 20
    assert proc.returncode == 2 and "anchors and aliases are not accepted in a spec" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_spec_that_is_not_utf8_is_refused_naming_the_file(tmp_path: Path, served_process: Any) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{")
    _refused(_lossd("train", str(bad), target=served_process.address), 2, f"{bad}: not UTF-8")


def test_a_port_beyond_65535_is_refused(served_process: Any) -> None:
    """gRPC took the port modulo 65536: a server on 33277 answered at 98813."""
    port = int(served_process.address.rsplit(":", 1)[1]) + 65536
    _refused(_lossd("health", target=f"127.0.0.1:{port}"), 2, f"port {port}", "not in 0-65535")


@pytest.mark.parametrize("args", [
    ["eval", "mse", "--y-pred", "[1.0]", "--y-true", "[0.0]", "--param", "reduction=\udcff"],
    ["eval", "m\udcffse", "--y-pred", "[1.0]", "--y-true", "[0.0]"],
    ["losses", "--filter", "\udcff"],
], ids=["param", "loss", "filter"])
def test_arguments_that_are_not_utf8_are_refused(served_process: Any, args: list[str]) -> None:
    """They reached the wire and failed with a UnicodeEncodeError traceback."""
    _refused(_lossd(*args, target=served_process.address), 2, "not valid UTF-8")


def test_json_nested_too_deeply_is_a_usage_error(served_process: Any) -> None:
    deep = "[" * 2000 + "1.0" + "]" * 2000
    _refused(_lossd("eval", "mse", "--y-pred", deep, "--y-true", "[1.0]", target=served_process.address), 2,
             "--y-pred: nested too deeply")
    _refused(_lossd("eval", "mse", "--y-pred", "[1.0]", "--y-true", "[1.0]", "--param", f"x={deep}",
                    target=served_process.address), 2, "--param x: nested too deeply")


@pytest.mark.parametrize(("args", "flag"), [
    (["jobs", "--limit", "99999999999999999999"], "--limit"),
    (["jobs", "--limit", "-1"], "--limit"),
    (["watch", "0123456789ab", "--after-seq", "99999999999999999999999"], "--after-seq"),
    (["train", "spec.json", "--world-size", "99999999999999999999"], "--world-size"),
], ids=["limit-huge", "limit-negative", "after-seq", "world-size"])
def test_numbers_beyond_their_fields_are_refused_naming_the_flag(served_process: Any, args: list[str],
                                                                 flag: str) -> None:
    """A limit beyond int32 was refused as '--state: ...'; an after-seq beyond int64 was a traceback."""
    proc = _lossd(*args, target=served_process.address)
    assert proc.returncode == 2 and f"argument {flag}" in proc.stderr and "must be from" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_certificate_file_that_is_not_pem_is_refused_naming_it(tmp_path: Path, served_process: Any) -> None:
    """It was reported as 'no lossd server answers', under gRPC's own ERROR lines."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not a pem\n")
    _refused(_lossd("--tls", "--ca-file", str(ca), "health", target=served_process.address), 2,
             "ca_file (LOSSD_CA_FILE)", "is not a PEM file")


def test_a_token_that_is_not_printable_ascii_is_refused(served_process: Any) -> None:
    """A control character reached gRPC, which answered INTERNAL: Invalid metadata."""
    _refused(_lossd("losses", target=served_process.address, env={"LOSSD_TOKEN": "a\x01b"}), 2,
             "token (LOSSD_TOKEN)", "printable ASCII")


def test_output_that_cannot_be_written_is_no_traceback(served_process: Any) -> None:
    """A full disk was an OSError traceback: one line, exit 1. A closed stdout was an AttributeError traceback
    (Python sets sys.stdout to None, and print writes nothing): exit 0, as a Python program's."""
    lossd = tool_path("lossd", "pip install -e . creates it")

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", f'"$0" --target "$1" {command}', lossd, served_process.address],
                              env=tool_env(), capture_output=True, text=True, timeout=60)
    full = run("losses --filter mse > /dev/full")
    assert full.returncode == 1 and "error: writing the output: No space left on device" in full.stderr, full.stderr
    assert "Traceback" not in full.stderr
    closed = run("eval mse --y-pred '[0.1]' --y-true '[0.2]' >&-")
    assert closed.returncode == 0 and closed.stderr == "", closed.stderr


def test_health_takes_lossd_timeout() -> None:
    """The flag was taken, the variable ignored (README: a flag and its variable are the same setting): against
    a port that never answers, health waited its own 5 s whatever LOSSD_TIMEOUT said."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        start = time.monotonic()
        proc = _lossd("health", target=f"127.0.0.1:{silent.getsockname()[1]}", env={"LOSSD_TIMEOUT": "1"})
        took = time.monotonic() - start
    assert proc.returncode == 1 and "DEADLINE_EXCEEDED" in proc.stderr, proc.stderr
    assert took < 4.5, took  # the CLI's start (about 1 s) and a 1 s deadline, not 5 s


def test_plot_to_an_empty_path_is_refused(served_process: Any) -> None:
    proc = _lossd("plot", "0123456789ab", "--out", "", target=served_process.address)
    assert proc.returncode == 2 and "argument --out" in proc.stderr and "an empty path" in proc.stderr, proc.stderr


def test_a_job_name_cannot_forge_rows_or_reach_the_terminal(served_process: Any) -> None:
    """Any submitter names a job: a newline forged a row of `lossd jobs`, an escape sequence reached the
    reader's terminal. Unprintable characters are printed escaped."""
    from lossd.client import Client

    spec = {"name": "forged\n0123456789ab  SUCCEEDED\x1b[31m", "model": {"linear": {}},
            "data": {"builtin": {"name": "rings", "params": {"n_positive": 8, "n_negative": 8}}},
            "loss": {"name": "binary_cross_entropy_with_logits"}, "optimizer": {"name": "sgd", "lr": 0.1},
            "epochs": 1, "batch_size": 8}
    with Client(served_process.address) as c:
        job_id = c.submit(spec)
        c.cancel(job_id)
    out = _lossd("jobs", target=served_process.address).stdout
    assert "\x1b" not in out and not any(line.startswith("0123456789ab") for line in out.splitlines()), out
    (row,) = [line for line in out.splitlines() if line.startswith(job_id)]
    assert row.endswith("forged\\n0123456789ab  SUCCEEDED\\x1b[31m"), row


@pytest.mark.parametrize(("args", "said"), [
    (["--y-pred", "[1.0]", "--y-pred", "[2.0]", "--y-true", "[0.0]"], "--y-pred: given twice"),
    (["--y-pred", "[1.0]", "--y-true", "[0.0]", "--y-true", "[1.0]"], "--y-true: given twice"),
    (["--y-pred", "[1.0]", "--y-true", "[0.0]", "--grad-output", "1.0", "--grad-output", "2.0"],
     "--grad-output: given twice"),
    (["--y-pred", "[1.0]", "--y-true", "[0.0]", "--dtype", "y_pred=float64", "--dtype", "y_pred=float16"],
     "--dtype y_pred: given twice"),
    (["--y-pred", "[1.0]", "--y-true", "[0.0]", "--param", "reduction=sum", "--param", "reduction =mean"],
     "--param reduction: given twice"),
    (["--y-pred", "[1.0]", "--y-true", "[0.0]", "--param", " =sum"], "expected KEY=VALUE"),
], ids=["y-pred", "y-true", "grad-output", "dtype", "param", "blank-key"])
def test_a_value_given_twice_is_refused_not_replaced(served_process: Any, args: list[str], said: str) -> None:
    """A second --y-pred, --dtype or --param silently replaced the first, while a second --input was refused;
    a key of spaces passed the empty-key check and reached the server as ``params.``."""
    _refused(_lossd("eval", "mse", *args, target=served_process.address), 2, said)


def test_a_decimal_beyond_float32_is_named_as_such(served_process: Any) -> None:
    """1e39 became Inf in the CLI (with numpy's overflow warning on stderr), and the server's refusal advised
    --allow-non-finite: the numbers now travel as typed, and the server names the one that does not fit."""
    proc = _lossd("eval", "mse", "--y-pred", "[0.5, 1e39]", "--y-true", "[0.0, 0.0]", target=served_process.address)
    _refused(proc, 1, "inputs.y_pred: the value at flat index 1, 1e+39, is beyond float32's range",
             "send the tensor as float64")
    proc = _lossd("eval", "mse", "--y-pred", "[0.5, 1e39]", "--y-true", "[0.0, 0.0]", "--dtype", "y_pred=float64",
                  "--dtype", "y_true=float64", target=served_process.address)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    local = torch.nn.functional.mse_loss(torch.tensor([0.5, 1e39], dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    assert json.loads(proc.stdout)["value"] == float(local)
