"""The ``lossd`` command line as a user runs it: a real subprocess against a real server.

Both entry points are exercised: ``python -m lossd.client.cli`` and the
``lossd`` console script installed next to the interpreter. Numbers are
compared exactly with local torch (same build, same CPU).
"""

from __future__ import annotations

import json
import os
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
from support.certs import make_pki
from support.servers import start_in_process
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
    proc = lossd_both("eval", "ce", "--y-pred", json.dumps(LOGITS), "--y-true", "[0, 2]", "--param", "label_smoothing=1.5")
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


def _strict_json(text: str) -> object:
    """``json.loads`` that refuses the NaN/Infinity tokens Python's json writes by default (not JSON)."""
    def refuse(token: str) -> object:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_eval_of_non_finite_values_prints_strict_json(lossd):  # type: ignore[no-untyped-def]
    """--allow-non-finite: NaN and infinities as protobuf's JSON strings, as `lossd watch` writes them."""
    out = _strict_json(_ok(lossd("eval", "mse", "--y-pred", "[NaN, Infinity, 1.0]", "--y-true", "[0.0, 0.0, 0.0]",
                                 "--param", "reduction=none", "--allow-non-finite")))
    assert out == {"loss": "mse_loss", "value": None, "loss_tensor": ["NaN", "Infinity", 1.0],
                   "grads": {"y_pred": ["NaN", "Infinity", 2.0], "y_true": ["NaN", "-Infinity", -2.0]}}
    out = _strict_json(_ok(lossd("eval", "mse", "--y-pred", "[NaN]", "--y-true", "[0.0]", "--allow-non-finite")))
    assert out["value"] == "NaN"  # type: ignore[index]


def test_json_output_writes_non_finite_floats_as_proto_json() -> None:
    from lossd.client import EvaluateResult
    from lossd.client.cli import _event_json, result_to_json
    from lossd.v1 import training_pb2

    inf = float("inf")
    result = EvaluateResult(-inf, torch.tensor(-inf).numpy(), {"y_pred": torch.tensor([float("nan"), 1.5]).numpy()},
                            "mse_loss")
    assert _strict_json(result_to_json(result)) == {"loss": "mse_loss", "value": "-Infinity",
                                                    "loss_tensor": "-Infinity", "grads": {"y_pred": ["NaN", 1.5]}}
    event = training_pb2.JobEvent(job_id="ab", loss=float("nan"), metrics={"val_loss": inf})
    assert _strict_json(_event_json(event)) == {"job_id": "ab", "loss": "NaN", "metrics": {"val_loss": "Infinity"}}


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


def test_unreachable_server_is_unavailable_naming_the_target_and_how_to_start_one(lossd):  # type: ignore[no-untyped-def]
    proc = lossd("--timeout", "5", "losses", target="127.0.0.1:1")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: UNAVAILABLE: no lossd server answers at 127.0.0.1:1: "), proc.stderr
    assert "`lossd serve`" in proc.stderr and "make run" in proc.stderr and "--target" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


@pytest.fixture(scope="module")
def pki(tmp_path_factory):  # type: ignore[no-untyped-def]
    return make_pki(tmp_path_factory.mktemp("pki"))


def _unavailable_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The CLI's one error line (gRPC's own handshake log lines may come before it)."""
    assert proc.returncode == 1, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    return line


def test_a_failed_tls_handshake_says_which_tls_settings_to_check(pki, served_process):  # type: ignore[no-untyped-def]
    """A server answers but no TLS connection comes of it: which TLS settings to check, one line, not
    "no lossd server answers ...: start one with `lossd serve`"."""
    lossd = [*_script(), "--max-attempts", "1", "--timeout", "10"]
    client_tls = ["--ca-file", str(pki.ca), "--cert-file", str(pki.client_cert), "--key-file", str(pki.client_key)]
    with start_in_process(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key),
                          tls_client_ca=str(pki.ca)) as address:
        assert _ok(run_tool([*lossd, "--target", address, *client_tls, "health"])) == "SERVING\n"
        # mutual TLS without a client certificate: the server closes the connection ("Socket closed")
        no_cert = _unavailable_line(run_tool([*lossd, "--target", address, "--ca-file", str(pki.ca), "health"]))
        # plaintext against a TLS server: the same closed connection
        plaintext = _unavailable_line(run_tool([*lossd, "--target", address, "health"]))
    # TLS against a plaintext server: the handshake fails (WRONG_VERSION_NUMBER)
    not_tls = _unavailable_line(run_tool([*lossd, "--target", served_process.address, *client_tls, "health"]))
    assert no_cert.startswith(f"error: UNAVAILABLE: the TLS handshake with {address} failed: check --ca-file"), no_cert
    assert "--cert-file and --key-file" in no_cert and "Socket closed" in no_cert, no_cert
    assert plaintext.startswith(f"error: UNAVAILABLE: a server at {address} closed the connection: if it serves "
                                "TLS, give --ca-file"), plaintext
    assert not_tls.startswith(f"error: UNAVAILABLE: the TLS handshake with {served_process.address} failed: the "
                              "server there does not speak TLS: drop --tls"), not_tls
    assert "WRONG_VERSION_NUMBER" in not_tls, not_tls
    for line in (no_cert, plaintext, not_tls):
        assert "`lossd serve`" not in line and "no lossd server answers" not in line, line


def test_a_connection_cut_during_a_call_is_not_called_a_tls_failure() -> None:
    """"Socket closed" after the connection was made (a server killed mid-call) is no handshake: the
    TLS hint is for connections that never came to be ("failed to connect ...")."""
    from lossd.client._errors import Unavailable
    from lossd.client.cli import _unavailable_text

    assert _unavailable_text(Unavailable("Socket closed"), "h:1", False) == "UNAVAILABLE: Socket closed (target h:1)"
    refused = Unavailable("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
                          "Failed to connect to remote host: Connection refused")
    assert "no lossd server answers at h:1" in _unavailable_text(refused, "h:1", True)


# ---------------------------------------------------------------------------
# losses


def test_losses_table_lists_every_loss_with_defaults(lossd_both, served_process):  # type: ignore[no-untyped-def]
    out = _ok(lossd_both("losses", "--wide"))
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
    line = next(x for x in _ok(lossd("losses", "--wide")).splitlines() if x.startswith("cross_entropy "))
    assert "reduction=mean" in line
    assert "ignore_index=-100" in line
    assert "label_smoothing=0.0" in line
    assert "[weight]" in line


def test_losses_filter(lossd):  # type: ignore[no-untyped-def]
    lines = _ok(lossd("losses", "--filter", "MSE", "--wide")).splitlines()
    names = [line.split()[0] for line in lines[1:-1]]
    expected = [s.name for s in REGISTRY if any("mse" in n.lower() for n in (s.name, *s.aliases))]
    assert names == expected and "mse_loss" in names


@pytest.mark.parametrize("width", [None, 120, 20])
def test_losses_table_of_no_loss_is_its_count(width) -> None:  # type: ignore[no-untyped-def]
    """No row at all (a --filter that matches nothing): the count line, as for any other list."""
    lines = format_losses_table([], width).splitlines()
    assert lines[-1] == "0 losses; [name] marks an optional input"
    # the header where it fits (as in --wide), nothing where it does not: never an empty line
    header = "NAME  ALIASES  INPUTS  PARAMS (defaults)"
    assert lines[:-1] == ([header] if width is None or width >= len(header) else []), lines


def test_losses_filter_that_matches_nothing(lossd):  # type: ignore[no-untyped-def]
    wide = _ok(lossd("losses", "--filter", "no-such-loss-zzz", "--wide"))
    assert wide.splitlines()[-1] == "0 losses; [name] marks an optional input", wide
    proc = lossd("losses", "--filter", "no-such-loss-zzz", env=tool_env(COLUMNS="100"))
    assert _ok(proc) == wide and proc.stderr == "", proc.stderr  # no traceback; as --wide prints it
    assert json.loads(_ok(lossd("losses", "--filter", "no-such-loss-zzz", "--json"))) == []


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


def test_connection_options_before_and_after_the_command(served_process):  # type: ignore[no-untyped-def]
    lossd = _script()
    assert _ok(run_tool([*lossd, "health", "--target", served_process.address])) == "SERVING\n"
    # after the command wins over before it; a flag given only before it stays
    assert _ok(run_tool([*lossd, "--target", "127.0.0.1:1", "health", "--target", served_process.address])) == "SERVING\n"
    assert _ok(run_tool([*lossd, "--target", served_process.address, "health", "--timeout", "5"])) == "SERVING\n"
    out = _ok(run_tool([*lossd, "eval", "mse", "--y-pred", "[0.5, 2.0]", "--y-true", "[1.0, 1.0]",
                        "--target", served_process.address, "--compression", "gzip", "--max-attempts", "1"]))
    assert json.loads(out)["value"] == 0.625


def test_client_settings_that_only_variables_reached_have_flags(served_process):  # type: ignore[no-untyped-def]
    lossd = [*_script(), "--target", served_process.address]
    # The flag reaches the channel: a ListLosses reply is far over 100 bytes.
    proc = run_tool([*lossd, "losses", "--max-message-bytes", "100"])
    assert proc.returncode == 1 and proc.stderr.startswith("error: RESOURCE_EXHAUSTED"), proc.stderr
    for flags in (["--compression", "deflate"], ["--keepalive", "30"], ["--load-balancing", "round_robin"],
                  ["--max-attempts", "2"]):
        assert _ok(run_tool([*lossd, "health", *flags])) == "SERVING\n", flags
    proc = run_tool([*lossd, "health", "--compression", "brotli"])
    assert proc.returncode == 2 and "--compression: 'brotli': expected one of none, gzip, deflate" in proc.stderr


@pytest.mark.parametrize("env, message", [
    ({"LOSSD_TLS": "maybe"}, "LOSSD_TLS='maybe': not a boolean; use 1/0, true/false, yes/no or on/off"),
    ({"LOSSD_TIMEOUT": "soon"}, "LOSSD_TIMEOUT='soon'"),
    # out of range: the variable is named too, as a value that does not parse names it
    ({"LOSSD_MAX_ATTEMPTS": "0"}, "max_attempts (LOSSD_MAX_ATTEMPTS): must be >= 1 (1 turns retries off), got 0"),
    ({"LOSSD_KEEPALIVE_S": "0"}, "keepalive_s (LOSSD_KEEPALIVE_S): must be > 0"),
    ({"LOSSD_MAX_MESSAGE_BYTES": "0"}, "max_message_bytes (LOSSD_MAX_MESSAGE_BYTES): must be from 1 to 2147483647"),
    ({"LOSSD_TIMEOUT": "-1"}, "timeout (LOSSD_TIMEOUT): must be > 0 seconds"),
])
def test_bad_setting_is_one_line_and_exit_2(env, message):  # type: ignore[no-untyped-def]
    proc = run_tool([*_script(), "health"], env=tool_env(**env))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("lossd: error: ") and message in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--max-attempts", "0", "argument --max-attempts: '0': must be >= 1 (1 turns retries off)"),
    ("--keepalive", "0", "argument --keepalive: '0': must be > 0 and <= 2147483.647 seconds"),
    ("--max-message-bytes", "0", "argument --max-message-bytes: '0': must be from 1 to 2147483647"),
    ("--timeout", "-1", "argument --timeout: '-1': must be > 0 seconds"),
])
def test_out_of_range_flag_names_the_flag(flag: str, value: str, message: str) -> None:
    """The SDK's range, refused as argparse refuses a flag that does not parse: naming the flag, not
    the SDK's keyword; before the command or after it."""
    for argv in ([flag, value, "health"], ["health", flag, value]):
        proc = run_tool([*_script(), "--target", "127.0.0.1:1", *argv])
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr, proc.stderr


def _buffered_env() -> dict[str, str]:
    """A user's environment: stdout block-buffered into a pipe (no PYTHONUNBUFFERED)."""
    env = tool_env()
    env.pop("PYTHONUNBUFFERED", None)
    return env


def test_broken_pipe_exits_quietly(served_process):  # type: ignore[no-untyped-def]
    """``lossd losses --json | head -c 100``: the reader goes away mid-output; no traceback.

    The pipe holds 4 KiB (F_SETPIPE_SZ) and the output is far larger, so lossd is still
    writing when the reader closes: the broken pipe is certain, not a race with the pipe's
    default 64 KiB."""
    import fcntl

    with Client(served_process.address) as c:
        infos = [json_format.MessageToDict(i, preserving_proto_field_name=True,
                                           always_print_fields_with_no_presence=True) for i in c.list_losses()]
    assert len(json.dumps(infos, indent=2)) > 4 * 4096  # pipe + Python's 8 KiB buffer, and more
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, 4096)
    with open(read_end, "rb", buffering=0) as reader:  # unbuffered: it takes no more than it reads
        proc = subprocess.Popen([*_script(), "--target", served_process.address, "losses", "--json"],
                                env=_buffered_env(), stdout=write_end, stderr=subprocess.PIPE)
        os.close(write_end)
        got = b""
        while len(got) < 100:
            chunk = reader.read(100 - len(got))
            assert chunk, "lossd ended before writing 100 bytes"
            got += chunk
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, stderr  # as a shell reports a process ended by SIGPIPE
    assert stderr == ""


def test_reader_gone_before_the_output_exits_quietly(served_process):  # type: ignore[no-untyped-def]
    """``lossd health | true``: a short output meets the closed pipe at the last flush; no
    "Exception ignored ... BrokenPipeError" from the interpreter."""
    proc = subprocess.Popen([*_script(), "--target", served_process.address, "health"],
                            env=_buffered_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before lossd has written anything: it takes far longer to start
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, stderr
    assert stderr == ""


@pytest.mark.parametrize("columns", [80, 120])
def test_losses_fit_the_terminal_width(served_process, columns):  # type: ignore[no-untyped-def]
    proc = run_tool([*_script(), "--target", served_process.address, "losses"], env=tool_env(COLUMNS=str(columns)))
    lines = _ok(proc).splitlines()
    assert max(len(line) for line in lines) <= columns, "\n".join(x for x in lines if len(x) > columns)
    text = " ".join(lines)
    for spec in REGISTRY:
        assert spec.name in text
    assert "[tail.7.1.weight]" in text  # adaptive_log_softmax_with_loss's last input, wrapped, not cut


def test_misspelled_spec_field_lists_the_fields_in_snake_case(lossd, tmp_path):  # type: ignore[no-untyped-def]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"model": {"linear": {}}, "epoch": 3, "batch_size": 10}))
    proc = lossd("train", str(spec))
    assert proc.returncode == 2, proc.stderr
    assert "spec: epoch: no such field (did you mean epochs?)" in proc.stderr
    assert "batch_size" in proc.stderr and "batchSize" not in proc.stderr
    spec.write_text(json.dumps({"model": {"mlp": {"hiden": [4]}}, "epochs": 1}))
    proc = lossd("train", str(spec))
    assert proc.returncode == 2 and "model.mlp.hiden: no such field (did you mean hidden?)" in proc.stderr


def test_missing_epochs_says_what_it_is(lossd, tmp_path):  # type: ignore[no-untyped-def]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"model": {"linear": {}}, "data": {"builtin": {"name": "linear_regression"}},
                                "loss": {"name": "mse"}}))
    proc = lossd("train", str(spec), "--no-progress")
    assert proc.returncode == 1, proc.stderr
    assert "INVALID_ARGUMENT: epochs: is 0 (not set); must be >= 1" in proc.stderr and '"epochs": 10' in proc.stderr


@pytest.mark.parametrize("command", [["plot", "0123456789ab", "--out", "curve.png"]])
def test_missing_extra_names_its_pip_command(command, tmp_path):  # type: ignore[no-untyped-def]
    code = ("import sys; sys.modules['matplotlib'] = None\nfrom lossd.client.cli import main\n"
            f"sys.exit(main(['--target', '127.0.0.1:1', *{command!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=tool_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("lossd plot: error: plotting needs matplotlib, which is not installed: "
                                   "pip install matplotlib (or pip install '.[plot]' in the lossd clone)")


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
    assert proc.stderr.strip() == ("lossd serve needs the server extra: pip install '.[server]' in the lossd clone "
                                   "(torch, grpcio-reflection, grpcio-health-checking, grpcio-status)")


def test_serve_help_is_the_servers():
    out = _ok(run_tool([*_script(), "serve", "--help"]))
    assert out.startswith("usage: lossd serve")
    for flag in ("--host", "--port", "--device", "--workers", "--max-message-bytes", "--no-reflection"):
        assert flag in out


def test_help_lists_commands():
    out = _ok(run_tool([*_script(), "--help"]))
    for command in ("serve", "losses", "eval", "health"):
        assert command in out


def test_serve_refuses_a_data_directory_in_use_in_one_line(tmp_path):  # type: ignore[no-untyped-def]
    import fcntl

    data = tmp_path / "data"
    data.mkdir()
    with open(data / "lock", "a+") as held:  # what a running server holds
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242\n")
        held.flush()
        proc = run_tool([*_script(), "serve", "--port", "0", "--data-dir", str(data)], timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "" and proc.stderr == (
        f"lossd serve: error: --data-dir {data} (env LOSSD_DATA_DIR): is in use by another lossd server (pid 4242); "
        "give each server its own --data-dir\n"), proc.stderr


def _serve_fails_in_one_line(argv: list[str], tmp_path, needle: str, env: dict[str, str] | None = None) -> str:  # type: ignore[no-untyped-def]
    """``lossd serve ARGV`` exits 2 with one line on stderr, ``lossd serve: error: ...NEEDLE...``."""
    proc = subprocess.run([*_script(), "serve", *argv], cwd=tmp_path, env=env or tool_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("lossd serve: error: ") and needle in proc.stderr, proc.stderr
    return proc.stderr


def test_serve_refuses_a_port_in_use_in_one_line(served_process, tmp_path):  # type: ignore[no-untyped-def]
    """``make run`` twice: the second server says the port is in use (it does not share it)."""
    port = served_process.address.rsplit(":", 1)[1]
    stderr = _serve_fails_in_one_line(["--port", port, "--data-dir", str(tmp_path / "data")], tmp_path,
                                      f"cannot listen on 127.0.0.1:{port}: the address is already in use")
    assert "choose another --port (LOSSD_PORT)" in stderr
    with Client(served_process.address) as c:
        assert c.health() == "SERVING"  # the first server is untouched


@pytest.mark.parametrize("device", ["bogus", "cuda:99"])
def test_serve_refuses_a_device_torch_cannot_use_in_one_line(device, tmp_path):  # type: ignore[no-untyped-def]
    stderr = _serve_fails_in_one_line(["--port", "0", "--device", device, "--data-dir", str(tmp_path / "d")],
                                      tmp_path, f"--device {device} (env LOSSD_DEVICE): torch cannot use it here (")
    assert stderr.endswith("); use auto or cpu\n"), stderr


def test_serve_refuses_a_data_directory_it_cannot_create_in_one_line(tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "file").write_text("not a folder")
    data = tmp_path / "file" / "data"
    _serve_fails_in_one_line(["--port", "0", "--data-dir", str(data)], tmp_path,
                             f"--data-dir {data} (env LOSSD_DATA_DIR): cannot use it as the data directory (Not a "
                             f"directory: {data}); give a folder this user can create and write")
    # the line names the path that failed, where it is one within the data directory (an audit: "(File exists)")
    (tmp_path / "d2").mkdir()
    (tmp_path / "d2" / "checkpoints").write_text("not a folder")
    _serve_fails_in_one_line(["--port", "0", "--data-dir", str(tmp_path / "d2")], tmp_path,
                             f"--data-dir {tmp_path / 'd2'} (env LOSSD_DATA_DIR): cannot use it as the data directory "
                             f"(File exists: {tmp_path / 'd2' / 'checkpoints'}); give a folder")


def test_serve_metrics_without_prometheus_client_in_one_line(tmp_path):  # type: ignore[no-untyped-def]
    code = ("import sys; sys.modules['prometheus_client'] = None\nfrom lossd.client.cli import main\n"
            f"sys.exit(main(['serve', '--port', '0', '--metrics-port', '0', '--data-dir', {str(tmp_path / 'd')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=tool_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("lossd serve: error: --metrics-port (env LOSSD_METRICS_PORT): metrics need "
                           "prometheus-client, which is not installed: pip install prometheus-client (or pip "
                           "install '.[metrics]' in the lossd clone)\n"), proc.stderr


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


def test_serve_refuses_a_plugin_that_is_not_installed_in_one_line(tmp_path):  # type: ignore[no-untyped-def]
    proc = run_tool([*_script(), "serve", "--port", "0", "--data-dir", str(tmp_path / "data"),
                     "--plugins", "nosuch"], timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "" and proc.stderr == (
        "lossd serve: error: --plugins 'nosuch' (env LOSSD_PLUGINS): nosuch is not installed "
        "(no entry point of group lossd.losses); use all, none or installed names\n"), proc.stderr
