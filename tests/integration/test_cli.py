"""The ``lossd`` command line as a user runs it: a real subprocess against a real server.

Both entry points are exercised: ``python -m lossd.client.cli`` and the
``lossd`` console script installed next to the interpreter. Numbers are
compared exactly with local torch (same build, same CPU).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from google.protobuf import json_format

from lossd.client import Client
from lossd.client.cli import format_losses_table, parse_param
from lossd.server.losses import REGISTRY
from lossd.v1 import lossd_pb2
from support.tools import run_tool, tool_env, tool_path

LOGITS = [[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]]
CLASSES = [0, 2]


def _module() -> list[str]:
    return [sys.executable, "-m", "lossd.client.cli"]


def _script() -> list[str]:
    return [tool_path("lossd", "pip install -e . creates it")]


RUNNERS = {"module": _module, "script": _script}


def _runner(base: list[str], served_process):  # type: ignore[no-untyped-def]
    def run(*args: str, target: str | None = served_process.address, **kw: object):  # type: ignore[no-untyped-def]
        prefix = ["--target", target] if target else []
        return run_tool([*base, *prefix, *args], **kw)  # type: ignore[arg-type]

    return run


@pytest.fixture()
def lossd(served_process):  # type: ignore[no-untyped-def]
    """Run ``lossd --target <served> ARGS...`` (the console script)."""
    return _runner(_script(), served_process)


@pytest.fixture(params=sorted(RUNNERS))
def lossd_both(request, served_process):  # type: ignore[no-untyped-def]
    """Like ``lossd``, once per entry point: the console script and ``python -m lossd.client.cli``."""
    return _runner(RUNNERS[request.param](), served_process)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def _eval_json(lossd, *args: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return json.loads(_ok(lossd("eval", *args)))


def _torch_ce(logits, target, dtype=torch.float32, **params):  # type: ignore[no-untyped-def]
    x = torch.tensor(logits, dtype=dtype, requires_grad=True)
    loss = F.cross_entropy(x, torch.tensor(target), **params)
    loss.backward()
    return loss.detach(), x.grad


# ---------------------------------------------------------------------------
# eval


def test_eval_cross_entropy_equals_local_torch(lossd_both):  # type: ignore[no-untyped-def]
    out = _eval_json(lossd_both, "cross_entropy", "--y-pred", json.dumps(LOGITS), "--y-true", json.dumps(CLASSES))
    loss, grad = _torch_ce(LOGITS, CLASSES)
    assert set(out) == {"loss", "value", "loss_tensor", "grads"}
    assert out["loss"] == "cross_entropy"
    assert round(out["value"], 4) == 0.5493
    assert out["value"] == float(loss)
    assert out["loss_tensor"] == float(loss)
    assert list(out["grads"]) == ["y_pred"]  # integer targets have no gradient
    assert out["grads"]["y_pred"] == grad.tolist()


def test_eval_params_are_json_typed(lossd):  # type: ignore[no-untyped-def]
    out = _eval_json(
        lossd, "CrossEntropyLoss", "--y-pred", json.dumps(LOGITS), "--y-true", json.dumps(CLASSES),
        "--param", "reduction=sum", "--param", "label_smoothing=0.1", "--param", "ignore_index=2",
    )
    loss, grad = _torch_ce(LOGITS, CLASSES, reduction="sum", label_smoothing=0.1, ignore_index=2)
    assert out["loss"] == "cross_entropy"
    assert out["value"] == float(loss)
    assert out["grads"]["y_pred"] == grad.tolist()


def test_eval_reduction_none_with_grad_output_is_a_vjp(lossd):  # type: ignore[no-untyped-def]
    pred, true, upstream = [0.5, 2.0, -1.0], [1.0, 1.0, 1.0], [1.0, 0.5, -2.0]
    out = _eval_json(
        lossd, "mse", "--y-pred", json.dumps(pred), "--y-true", json.dumps(true),
        "--param", "reduction=none", "--grad-output", json.dumps(upstream),
    )
    x = torch.tensor(pred, requires_grad=True)
    y = torch.tensor(true, requires_grad=True)
    loss = F.mse_loss(x, y, reduction="none")
    loss.backward(torch.tensor(upstream))
    assert out["value"] is None
    assert out["loss_tensor"] == loss.detach().tolist()
    assert out["grads"] == {"y_pred": x.grad.tolist(), "y_true": y.grad.tolist()}


def test_eval_dtype_override_keeps_float64(lossd):  # type: ignore[no-untyped-def]
    logits = [[0.1, 0.2, 0.3], [1.0 / 3, 0.7, -0.9]]
    out = _eval_json(
        lossd, "ce", "--y-pred", json.dumps(logits), "--y-true", "[1, 0]", "--dtype", "y_pred=float64",
        "--dtype", "y_true=int32",
    )
    loss, grad = _torch_ce(logits, [1, 0], dtype=torch.float64)
    assert out["value"] == float(loss)
    assert out["grads"]["y_pred"] == grad.tolist()
    float32_loss, _ = _torch_ce(logits, [1, 0])
    assert out["value"] != float(float32_loss)  # really float64 on the server


def test_eval_extra_input_and_grad_input(lossd):  # type: ignore[no-untyped-def]
    weight = [1.0, 2.0, 0.5]
    out = _eval_json(
        lossd, "cross_entropy", "--y-pred", json.dumps(LOGITS), "--y-true", json.dumps(CLASSES),
        "--input", f"weight={json.dumps(weight)}", "--grad-input", "y_pred",
    )
    x = torch.tensor(LOGITS, requires_grad=True)
    loss = F.cross_entropy(x, torch.tensor(CLASSES), torch.tensor(weight))
    loss.backward()
    assert out["value"] == loss.item()
    assert out["grads"] == {"y_pred": x.grad.tolist()}


def test_eval_canonical_input_names(lossd):  # type: ignore[no-untyped-def]
    out = _eval_json(lossd, "mse_loss", "--input", "input=[1.0, 2.0]", "--input", "target=[0.0, 0.0]",
                     "--param", "reduction=sum")
    assert out["value"] == 5.0
    assert out["grads"] == {"input": [2.0, 4.0], "target": [-2.0, -4.0]}


# ---------------------------------------------------------------------------
# errors


def test_unknown_loss_is_not_found_with_close_names(lossd):  # type: ignore[no-untyped-def]
    proc = lossd("eval", "cross_entropi", "--y-pred", "[[1.0]]", "--y-true", "[0]")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert re.match(r"error: NOT_FOUND: .*cross_entropy", proc.stderr), proc.stderr


def test_bad_param_is_invalid_argument_naming_the_field(lossd_both):  # type: ignore[no-untyped-def]
    proc = lossd_both("eval", "ce", "--y-pred", json.dumps(LOGITS), "--y-true", "[0, 2]", "--param", "label_smoothing=-0.1")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: INVALID_ARGUMENT: params.label_smoothing"), proc.stderr


def test_param_value_true_is_a_bool_not_a_string(lossd):  # type: ignore[no-untyped-def]
    proc = lossd("eval", "ce", "--y-pred", json.dumps(LOGITS), "--y-true", "[0, 2]", "--param", "reduction=true")
    assert proc.returncode == 1
    assert "params.reduction" in proc.stderr and "True" in proc.stderr, proc.stderr


def test_integer_prediction_is_promoted_as_in_torch(lossd):  # type: ignore[no-untyped-def]
    out = _eval_json(lossd, "mse", "--y-pred", "[1, 2]", "--y-true", "[1.5, 2.0]")
    assert out["value"] == F.mse_loss(torch.tensor([1, 2]), torch.tensor([1.5, 2.0])).item()
    assert list(out["grads"]) == ["y_true"]  # an integer input has no gradient


def test_warnings_go_to_stderr_and_strict_refuses(lossd):  # type: ignore[no-untyped-def]
    args = ("eval", "soft_margin_loss", "--y-pred", "[0.5, -1.0]", "--y-true", "[1.0, 0.5]")
    proc = lossd(*args)
    assert json.loads(_ok(proc))["value"] == F.soft_margin_loss(torch.tensor([0.5, -1.0]),
                                                                 torch.tensor([1.0, 0.5])).item()
    assert proc.stderr.startswith("warning: inputs.target: values are 1 or -1"), proc.stderr
    proc = lossd(*args, "--strict")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: INVALID_ARGUMENT: inputs.target: values are 1 or -1"), proc.stderr
    assert "strict" in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--y-pred", "[[1.0, 2.0]"], "--y-pred: not valid JSON"),
        (["--y-pred", "[[1.0], [2.0, 3.0]]"], "--y-pred: not a rectangular array"),
        (["--y-pred", '["a"]'], "--y-pred: not a rectangular array"),
        (["--y-pred", "[1.0]", "--dtype", "y_pred=float128"], "'float128' is not a dtype"),
        (["--y-pred", "[1.0]", "--dtype", "weight=float64"], "--dtype weight: no such input given"),
        (["--y-pred", "[1.0]", "--param", "reduction"], "expected KEY=VALUE"),
        (["--y-pred", "[1.0]", "--input", "weight"], "expected NAME=JSON"),
    ],
)
def test_usage_errors_exit_2_before_calling(lossd, args, message):  # type: ignore[no-untyped-def]
    proc = lossd("eval", "mse", *args, target="127.0.0.1:1")  # never contacted
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


def test_unreachable_server_is_unavailable(lossd):  # type: ignore[no-untyped-def]
    proc = lossd("--timeout", "5", "losses", target="127.0.0.1:1")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: UNAVAILABLE: "), proc.stderr


# ---------------------------------------------------------------------------
# losses


def test_losses_table_lists_every_loss_with_defaults(lossd_both, served_process):  # type: ignore[no-untyped-def]
    out = _ok(lossd_both("losses"))
    with Client(served_process.address) as c:
        infos = c.list_losses()
    assert {i.name for i in infos} == {s.name for s in REGISTRY}
    assert out == format_losses_table(infos) + "\n"
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ALIASES", "INPUTS", "PARAMS", "(defaults)"]
    assert lines[-1].startswith(f"{len(infos)} loss")
    for info, line in zip(infos, lines[1:-1]):
        assert line.startswith(info.name + " ")
        for alias in info.aliases:
            assert alias in line
        for i in info.inputs:
            assert (i.name if i.required else f"[{i.name}]") in line
        for p in info.params:
            assert f"{p.name}=" in line


def test_losses_table_shows_typed_defaults(lossd):  # type: ignore[no-untyped-def]
    line = next(x for x in _ok(lossd("losses")).splitlines() if x.startswith("cross_entropy "))
    assert "reduction=mean" in line
    assert "ignore_index=-100" in line
    assert "label_smoothing=0.0" in line
    assert "[weight]" in line


def test_losses_filter(lossd):  # type: ignore[no-untyped-def]
    lines = _ok(lossd("losses", "--filter", "MSE")).splitlines()
    names = [line.split()[0] for line in lines[1:-1]]
    expected = [s.name for s in REGISTRY if any("mse" in n.lower() for n in (s.name, *s.aliases))]
    assert names == expected and "mse_loss" in names


def test_losses_json_round_trips_to_loss_info(lossd, served_process):  # type: ignore[no-untyped-def]
    data = json.loads(_ok(lossd("losses", "--json")))
    with Client(served_process.address) as c:
        infos = c.list_losses()
    assert [json_format.ParseDict(d, lossd_pb2.LossInfo()) for d in data] == infos
    ce = next(d for d in data if d["name"] == "cross_entropy")
    assert ce["inputs"][0]["dtype_kind"] == "float"
    assert {p["name"]: p["default"] for p in ce["params"]}["reduction"] == "mean"


# ---------------------------------------------------------------------------
# health, target, serve


def test_health_serving(lossd_both):  # type: ignore[no-untyped-def]
    assert _ok(lossd_both("health")) == "SERVING\n"
    assert _ok(lossd_both("health", "--service", "lossd.v1.LossService")) == "SERVING\n"


def test_health_unknown_service_and_unreachable_exit_1(lossd):  # type: ignore[no-untyped-def]
    proc = lossd("health", "--service", "no.such.Service")
    assert proc.returncode == 1 and proc.stderr.startswith("error: NOT_FOUND"), proc.stderr
    proc = lossd("health", target="127.0.0.1:1")
    assert proc.returncode == 1 and proc.stderr.startswith("error: UNAVAILABLE"), proc.stderr


def test_target_defaults_to_env(served_process):  # type: ignore[no-untyped-def]
    proc = run_tool([*_script(), "health"], env=tool_env(LOSSD_TARGET=served_process.address))
    assert _ok(proc) == "SERVING\n"


def test_cli_does_not_import_torch():
    code = "import sys, lossd.client.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    _ok(run_tool([sys.executable, "-c", code]))


def test_serve_without_server_extra_says_what_to_install():
    code = "import sys; sys.modules['torch'] = None\nfrom lossd.client.cli import main\nsys.exit(main(['serve']))"
    proc = run_tool([sys.executable, "-c", code])
    assert proc.returncode == 2
    assert proc.stderr.strip() == "lossd serve needs the server extra: pip install 'lossd[server]'"


def test_serve_help_is_the_servers():
    out = _ok(run_tool([*_script(), "serve", "--help"]))
    assert out.startswith("usage: lossd serve")
    for flag in ("--host", "--port", "--device", "--workers", "--max-message-bytes", "--no-reflection"):
        assert flag in out


def test_help_lists_commands():
    out = _ok(run_tool([*_script(), "--help"]))
    for command in ("serve", "losses", "eval", "health"):
        assert command in out


def test_serve_runs_the_server_until_sigterm(tmp_path):  # type: ignore[no-untyped-def]
    proc = subprocess.Popen(
        [*_script(), "serve", "--port", "0", "--grace", "1"], cwd=tmp_path, env=tool_env(PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        address = None
        for line in proc.stdout:
            m = re.search(r"listening on (\S+:\d+)", line)
            if m:
                address = m.group(1)
                break
        assert address, "lossd serve did not report its address"
        assert _ok(run_tool([*_script(), "--target", address, "health"])) == "SERVING\n"
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        assert "lossd stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------
# pure helpers (no server)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("reduction=sum", ("reduction", "sum")),
        ("label_smoothing=0.1", ("label_smoothing", 0.1)),
        ("log_target=true", ("log_target", True)),
        ("ignore_index=-1", ("ignore_index", -1)),
        ("cutoffs=[2, 4]", ("cutoffs", [2, 4])),
        ('reduction="none"', ("reduction", "none")),
        ("distance_function=a=b", ("distance_function", "a=b")),
        ("weight=", ("weight", "")),
    ],
)
def test_parse_param(text, expected):  # type: ignore[no-untyped-def]
    assert parse_param(text) == expected
