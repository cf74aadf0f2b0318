"""The ``lossd`` command line: serve, list losses, evaluate one, check health, train and plot jobs.

::

    lossd serve [--host H] [--port P] ...        run the server (needs lossd[server])
    lossd losses [--filter TEXT] [--json]        what the server offers
    lossd eval LOSS --y-pred JSON --y-true JSON [--param k=v ...]
    lossd health [--service NAME]                exit 0 when SERVING, 1 otherwise
    lossd train SPEC [--detach] [--no-progress]  run a training job (JSON or YAML spec file)
    lossd train SPEC --world-size N              ... on N data-parallel processes (docs/scaling.md)
    lossd jobs [--state S ...] [--limit N]       list training jobs, newest first
    lossd watch JOB_ID [--after-seq N]           follow a job's events (JSON lines)
    lossd cancel JOB_ID                          stop a job
    lossd join JOB_ID --rdzv-endpoint HOST:PORT  run this machine's ranks of a job on several machines
    lossd plot JOB_ID --out curve.png            draw a job's curves (needs lossd[plot])

Every command but ``serve`` talks to ``--target`` (env ``LOSSD_TARGET``, default
``127.0.0.1:50051``) with the SDK's connection settings (``--token``,
``--ca-file``, ``--compression``, ... or their ``LOSSD_*`` variables: the flags are
built from the SDK's settings table, ``lossd.client._config.SETTINGS``), given
before or after the command. This module never imports torch: only ``lossd serve``
loads the server, lazily.

>>> parse_param("reduction=sum"), parse_param("label_smoothing=0.1"), parse_param("log_target=true")
(('reduction', 'sum'), ('label_smoothing', 0.1), ('log_target', True))
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import sys
import textwrap
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from google.protobuf import json_format

from .. import __version__
from .._settings import Setting, first_line, printable
from .._wire import DTYPES
from ..v1 import lossd_pb2
from ._client import Client, EvaluateResult
from ._codec import encode
from ._config import SETTINGS, check_range
from ._errors import LossdError, NotFound, Unavailable
from ._extras import EXTRAS, MissingExtra
from ._training import TERMINAL_STATES, Progress, TrainResult, jobs_table, state_name
from ._warnings import ServerWarning

__all__ = ["main", "build_parser", "parse_param", "format_losses_table", "format_result", "result_to_json", "to_json"]

#: Modules that only the server extra provides.
_SERVER_EXTRA_MODULES = {"torch", "grpc_health", "grpc_reflection"}
_SERVER_EXTRA_HINT = f"lossd serve needs the server extra: {EXTRAS['server']}"

#: The connection flags (``--target``, ``--timeout``, ...): one per client setting that has a flag.
_CONNECTION = tuple(s for s in SETTINGS if s.flag)
#: Connection flags that take a value (``_split_command`` skips their values).
_VALUE_OPTIONS = tuple(s.flag for s in _CONNECTION if not s.is_switch)
#: Where ``lossd serve`` and ``make run`` listen: the hint when no server answers.
_START_HINT = "start one with `lossd serve` (`make run` in the lossd clone), or point --target / LOSSD_TARGET at one"
#: What gRPC's detail holds when something answered but the TLS handshake failed: the peer closed the
#: connection (a client without TLS, or without the certificate a mutual-TLS server wants), or the
#: handshake itself failed (our --tls against plaintext, a certificate not trusted, a wrong name).
_TLS_FAILURES = ("socket closed", "tls handshake", "ssl", "certificate", "hostname verification",
                 "security handshaker")


def _bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high`` (the protobuf field's range); argparse names the
    flag in its refusal (a value beyond the field's range was a traceback, or named another flag)."""
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text}: must be from {low} to {high}")
        return value
    return parse


class _Once(argparse.Action):
    """An option that takes one value: given twice, the command refuses it (``store`` kept the last)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if getattr(namespace, self.dest) is not None:
            parser.exit(2, f"{parser.prog}: error: {option_string}: given twice\n")  # one line, as CliError's
        setattr(namespace, self.dest, values)


def _path(text: str) -> str:
    """An argparse type: a path that is not empty (``--out ''`` wrote ``./.png``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return text


class CliError(Exception):
    """A usage problem found after argument parsing (bad JSON, unknown dtype)."""


# ---------------------------------------------------------------------------
# argument parsing


def build_parser() -> argparse.ArgumentParser:
    """The ``lossd`` argument parser (``serve`` arguments belong to the server)."""
    parser = argparse.ArgumentParser(
        prog="lossd",
        description="PyTorch loss functions as a gRPC service: values and gradients, remotely.",
    )
    add_connection_flags(parser)
    parser.add_argument("--version", action="version", version=f"lossd {__version__}")
    # The same flags after the command: SUPPRESS leaves a value given before it in place.
    connection = argparse.ArgumentParser(add_help=False)
    add_connection_flags(connection, after_command=True)
    sub = _WithConnectionFlags(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), connection)

    sub.add_parser(
        "serve", add_help=False, help="run the server (see 'lossd serve --help'; needs lossd[server])"
    )

    losses = sub.add_parser("losses", help="list the losses the server offers")
    losses.add_argument("--filter", default="", help="only losses whose name or an alias contains this text")
    losses.add_argument("--json", action="store_true", help="print the LossInfo messages as JSON")
    losses.add_argument("--wide", action="store_true",
                        help="one line per loss, however long (default: wrap to the terminal's width)")

    ev = sub.add_parser(
        "eval",
        help="evaluate one loss and its gradients",
        description="Evaluate LOSS(y_pred, y_true, ...) on the server and print the value and gradients "
        "as JSON. Arrays are JSON: an array with any decimal point or exponent is float32, one of "
        "whole numbers int64 (write 1.0, not 1, for a float input), one of true/false bool; "
        "--dtype overrides.",
    )
    ev.add_argument("loss", help="loss name or alias, e.g. cross_entropy, CrossEntropyLoss, ce")
    ev.add_argument("--y-pred", action=_Once, metavar="JSON", help="the prediction (torch's first argument, 'input')")
    ev.add_argument("--y-true", action=_Once, metavar="JSON", help="the target (torch's second argument, 'target')")
    ev.add_argument(
        "--input", action="append", default=[], metavar="NAME=JSON",
        help="another input tensor by torch's argument name, e.g. weight='[1.0, 2.0]' (repeatable)",
    )
    ev.add_argument(
        "--dtype", action="append", default=[], metavar="NAME=DTYPE",
        help="dtype of an input (y_pred, y_true, an --input NAME or grad_output), e.g. "
        f"y_pred=float64; one of {', '.join(DTYPES)} (repeatable)",
    )
    ev.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="loss parameter; VALUE is JSON when it parses (0.1, true, [2, 4]), else a string (repeatable)",
    )
    ev.add_argument(
        "--grad-input", action="append", default=[], metavar="NAME",
        help="only return the gradient of this input (repeatable; default: every differentiable input)",
    )
    ev.add_argument(
        "--allow-non-finite", action="store_true",
        help="let NaN and Infinity (JSON NaN, Infinity, -Infinity) through to the loss; the server "
        "refuses them by default. The result writes them as protobuf's JSON does: \"NaN\", \"Infinity\", "
        "\"-Infinity\" (strings)",
    )
    ev.add_argument(
        "--strict", action="store_true",
        help="refuse inputs outside the loss's documented domain (targets other than 1/-1, labels outside "
        "[0, 1], ...) instead of computing them as torch does with a warning",
    )
    ev.add_argument(
        "--grad-output", action=_Once, metavar="JSON",
        help="upstream gradient shaped like the loss (for reduction=none): grads become a "
        "vector-Jacobian product",
    )

    health = sub.add_parser("health", help="grpc.health.v1 check: exit 0 when SERVING, 1 otherwise")
    health.add_argument("--service", default="", help="service to check (default: the whole server)")

    train = sub.add_parser("train", help="run a training job to its end and print its metrics",
                           description="Submit the job spec in SPEC (a TrainJobRequest as JSON, or YAML with "
                           "PyYAML), show its progress on stderr and print the final metrics.")
    train.add_argument("spec", help="path of the job spec (.json, .yaml, .yml)")
    train.add_argument("--detach", action="store_true", help="only submit: print the job id and return")
    train.add_argument("--world-size", type=_bounded(1, 2**31 - 1), default=None, metavar="N",
                       help="train on N data-parallel processes (overrides the spec's world_size; docs/scaling.md)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar or epoch lines")
    train.add_argument("--json", action="store_true", help="print the terminal event as JSON instead of a table")

    jobs = sub.add_parser("jobs", help="list training jobs, newest first")
    jobs.add_argument("--state", action="append", default=[], metavar="STATE",
                      help="only jobs in this state, e.g. RUNNING (repeatable)")
    jobs.add_argument("--limit", type=_bounded(0, 2**31 - 1), default=0,
                      help="at most this many jobs, the newest (default: every job, read a page at a time)")

    watch = sub.add_parser("watch", help="follow a job's events to its end, one JSON object per line")
    watch.add_argument("job_id")
    watch.add_argument("--after-seq", type=_bounded(0, 2**63 - 1), default=0,
                       help="only events after this sequence number")

    cancel = sub.add_parser("cancel", help="stop a training job")
    cancel.add_argument("job_id")

    join = sub.add_parser("join", help="run this machine's ranks of a training job with nodes > 1 "
                          "(needs lossd[server]; docs/scaling.md)")
    join.add_argument("job_id")
    join.add_argument("--rdzv-endpoint", required=True, metavar="HOST:PORT",
                      help="the server's --rdzv-endpoint (the c10d store the machines meet on)")

    plot = sub.add_parser("plot", help="draw a job's loss, metrics and learning rate per epoch (lossd[plot])")
    plot.add_argument("job_id")
    plot.add_argument("--out", required=True, type=_path, metavar="PATH", help="image file to write, e.g. curve.png")
    return parser


class _WithConnectionFlags:
    """``add_parser`` that gives every subcommand but ``serve`` the connection flags too."""

    def __init__(self, sub: Any, connection: argparse.ArgumentParser) -> None:
        self._sub, self._connection = sub, connection

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if name != "serve":
            kwargs["parents"] = [self._connection]
        parser: argparse.ArgumentParser = self._sub.add_parser(name, **kwargs)
        return parser


def _flag_type(setting: Setting[Any]) -> Callable[[str], Any]:
    """An argparse ``type``: the setting's own parser and range (the SDK's rules), its error as
    argparse's, which names the flag (``argument --max-attempts: '0': must be >= 1 ...``)."""

    def parse(text: str) -> Any:
        try:
            return check_range(setting.name, setting.parse(text))
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None

    return parse


def add_connection_flags(parser: argparse.ArgumentParser, after_command: bool = False) -> None:
    """The client settings' flags (``--target``, ``--timeout``, ``--compression``, ...).

    Unset flags are ``None`` (the client then reads the ``LOSSD_*`` variable, else the
    default); after a command they are absent unless given, so that they never undo
    the same flag given before it.
    """
    group = parser.add_argument_group("connection (also after the command; each has a LOSSD_* variable)")
    for setting in _CONNECTION:
        assert setting.flag is not None
        default = argparse.SUPPRESS if after_command else None
        if setting.is_switch:  # --tls
            group.add_argument(setting.flag, dest=setting.name, action="store_true", default=default,
                               help=f"{setting.help} (env {setting.env}=1)")
            continue
        shown = "" if setting.default is None else f"; default {setting.default}"
        text = f"{setting.help} (env {setting.env}{shown})".replace("%", "%%")
        group.add_argument(setting.flag, dest=setting.name, type=_flag_type(setting), default=default,
                           metavar=setting.metavar, help=text)


def _split_command(argv: list[str]) -> tuple[int, str | None]:
    """Index and name of the subcommand, skipping global options (and their values)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUE_OPTIONS:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return i, arg
    return len(argv), None


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value`` with ``value`` parsed as JSON when it parses, else kept as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CliError(f"--param {text!r}: expected KEY=VALUE, e.g. reduction=sum")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    except RecursionError:
        raise CliError(f"--param {key}: nested too deeply") from None
    return key, value


def _parse_json_array(option: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise CliError(f"{option}: not valid JSON ({e}): {text!r}") from None
    except RecursionError:
        raise CliError(f"{option}: nested too deeply") from None


def _tensor(option: str, value: Any, dtype: str | None) -> lossd_pb2.Tensor:
    """A ``values``-encoded Tensor: the server converts and validates the numbers.

    Default dtypes follow :func:`lossd.client.encode` (floats -> float32, ints
    -> int64, bools -> bool); ``dtype`` overrides and keeps full precision.
    """
    try:
        msg = encode(value, "values")
        if dtype is None and msg.dtype == "float32":  # the numbers as typed: the server rounds them to float32
            dtype = msg.dtype                          # and names one beyond its range (encode made it Inf)
        if dtype is not None:
            exact = np.asarray(value)
            if exact.dtype.kind not in "biuf":
                raise TypeError(f"cannot send {exact.dtype} elements")
            numbers = exact.astype(np.float64)
            if DTYPES[dtype].kind == "complex":  # real numbers: imaginary parts 0, interleaved
                numbers = numbers.astype(np.complex128).view(np.float64)
            msg = lossd_pb2.Tensor(dtype=dtype, shape=list(exact.shape), values=numbers.ravel().tolist())
    except (TypeError, ValueError) as e:
        raise CliError(f"{option}: not a rectangular array of numbers or booleans ({e})") from None
    return msg


def _build_eval_request(args: argparse.Namespace) -> lossd_pb2.EvaluateLossRequest:
    arrays: dict[str, tuple[str, Any]] = {}
    if args.y_pred is not None:
        arrays["y_pred"] = ("--y-pred", _parse_json_array("--y-pred", args.y_pred))
    if args.y_true is not None:
        arrays["y_true"] = ("--y-true", _parse_json_array("--y-true", args.y_true))
    for item in args.input:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise CliError(f"--input {item!r}: expected NAME=JSON, e.g. weight='[1.0, 2.0]'")
        if name in arrays:
            raise CliError(f"--input {name}: given twice")
        arrays[name] = (f"--input {name}", _parse_json_array(f"--input {name}", text))
    if args.grad_output is not None:
        grad_output = ("--grad-output", _parse_json_array("--grad-output", args.grad_output))

    dtypes: dict[str, str] = {}
    for item in args.dtype:
        name, sep, dtype = item.partition("=")
        if not sep or not name:
            raise CliError(f"--dtype {item!r}: expected NAME=DTYPE, e.g. y_pred=float64")
        if dtype not in DTYPES:
            raise CliError(f"--dtype {name}: {dtype!r} is not a dtype; one of: {', '.join(DTYPES)}")
        if name not in arrays and not (name == "grad_output" and args.grad_output is not None):
            given = ", ".join([*arrays, *(["grad_output"] if args.grad_output is not None else [])])
            raise CliError(f"--dtype {name}: no such input given (given: {given or 'none'})")
        if name in dtypes:
            raise CliError(f"--dtype {name}: given twice")
        dtypes[name] = dtype

    params: dict[str, Any] = {}
    for item in args.param:
        key, value = parse_param(item)
        if key in params:
            raise CliError(f"--param {key}: given twice")
        params[key] = value
    request = lossd_pb2.EvaluateLossRequest(
        loss=args.loss,
        inputs={name: _tensor(opt, value, dtypes.get(name)) for name, (opt, value) in arrays.items()},
        grad_inputs=args.grad_input,
        allow_non_finite=args.allow_non_finite,
        strict=args.strict,
    )
    if params:
        request.params.update(params)
    if args.grad_output is not None:
        request.grad_output.CopyFrom(_tensor(grad_output[0], grad_output[1], dtypes.get("grad_output")))
    return request


# ---------------------------------------------------------------------------
# output


def _default_text(param: lossd_pb2.ParamInfo) -> str:
    """A parameter default as a user types it after ``--param name=``."""
    kind = param.default.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return "null"
    if kind == "string_value":
        return param.default.string_value
    if kind == "bool_value":
        return "true" if param.default.bool_value else "false"
    if kind == "number_value":
        x = param.default.number_value
        return str(int(x)) if param.type in ("int", "int_list") and x.is_integer() else repr(x)
    value = json_format.MessageToDict(param.default)
    if isinstance(value, list):
        value = [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]
    return json.dumps(value)


def _input_text(i: lossd_pb2.InputInfo) -> str:
    return i.name if i.required else f"[{i.name}]"


def _wrap_items(items: Sequence[str], width: int) -> list[str]:
    """Comma-separated ``items`` as lines of at most ``width`` characters (an item longer
    than that gets a line of its own)."""
    lines: list[str] = []
    for k, item in enumerate(items):
        text = item + ("," if k < len(items) - 1 else "")
        if lines and len(lines[-1]) + 1 + len(text) <= width:
            lines[-1] += " " + text
        else:
            lines.append(text)
    return lines or ["-"]


def format_losses_table(losses: Sequence[lossd_pb2.LossInfo], width: int | None = None) -> str:
    """A readable table: name, aliases, inputs (``[optional]``) and params with defaults.

    ``width=None``: one line per loss, however long. Otherwise lines fit in ``width``
    characters: the aliases, inputs and params cells wrap between items, and where even
    that is too wide, each loss becomes a block of its own (name, then inputs and params).

    >>> info = lossd_pb2.LossInfo(name="mse_loss", aliases=["MSELoss", "mse", "l2_loss"])
    >>> print(format_losses_table([info], width=45))
    NAME      ALIASES   INPUTS  PARAMS (defaults)
    mse_loss  MSELoss,  -       -
              mse,
              l2_loss
    1 loss; [name] marks an optional input
    >>> print(format_losses_table([info], width=30))
    mse_loss (MSELoss, mse,
        l2_loss)
      inputs  -
      params  -
    1 loss; [name] marks an optional input
    """
    header = ("NAME", "ALIASES", "INPUTS", "PARAMS (defaults)")
    rows = [
        (
            [info.name],
            list(info.aliases) or ["-"],
            [_input_text(i) for i in info.inputs] or ["-"],
            [f"{p.name}={_default_text(p)}" for p in info.params] or ["-"],
        )
        for info in losses
    ]
    footer = f"{len(rows)} loss{'es' if len(rows) != 1 else ''}; [name] marks an optional input"
    widths = [max(len(", ".join(r[k])) for r in ([[h] for h in header], *rows)) for k in range(4)]
    if width is not None:
        # The name column never wraps; the others shrink, the one with the most room
        # above its longest item first, down to that item.
        longest = [max([len(h), *(len(item) + 1 for r in rows for item in r[k])]) for k, h in enumerate(header)]
        while sum(widths) + 2 * 3 > width:
            k = max(range(1, 4), key=lambda j: widths[j] - longest[j])
            if widths[k] <= longest[k]:
                return "\n".join(filter(None, (_loss_blocks(rows, width), footer)))
            widths[k] -= 1
    lines = ["  ".join(h.ljust(widths[k]) if k < 3 else h for k, h in enumerate(header)).rstrip()]
    for row in rows:
        cells = [row[0]] + [_wrap_items(row[k], widths[k]) if width is not None else [", ".join(row[k])]
                            for k in range(1, 4)]
        for n in range(max(len(c) for c in cells)):
            parts = [c[n] if n < len(c) else "" for c in cells]
            lines.append("  ".join(part.ljust(widths[k]) if k < 3 else part for k, part in enumerate(parts)).rstrip())
    lines.append(footer)
    return "\n".join(lines)


def _loss_blocks(rows: Sequence[tuple[list[str], ...]], width: int) -> str:
    """One block per loss, for a terminal too narrow for the table."""
    lines: list[str] = []
    for name, aliases, inputs, params in rows:
        title = name[0] if aliases == ["-"] else f"{name[0]} ({', '.join(aliases)})"
        lines += textwrap.wrap(title, width, subsequent_indent="    ", break_on_hyphens=False) or [name[0]]
        for label, items in (("inputs", inputs), ("params", params)):
            lines += textwrap.wrap(", ".join(items), width, initial_indent=f"  {label}  ",
                                   subsequent_indent=" " * 10, break_on_hyphens=False)
    return "\n".join(lines)


def to_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps(value, **kwargs)``, strict JSON: a NaN or infinite float is written as protobuf's JSON
    mapping writes it, the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``, in every JSON the
    CLI prints (``lossd eval``'s result, ``lossd watch``'s events, ``--json`` output).

    >>> to_json({"value": float("nan"), "grads": [[1.0, float("-inf")]], "n": 2})
    '{"value": "NaN", "grads": [[1.0, "-Infinity"]], "n": 2}'
    """
    return json.dumps(_proto_json_floats(value), allow_nan=False, **kwargs)


def _proto_json_floats(value: Any) -> Any:
    """``value`` with each non-finite float replaced by its protobuf JSON string (lists, tuples and dicts walked)."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {k: _proto_json_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_proto_json_floats(v) for v in value]
    return value


def _json_array(value: Any) -> Any:
    """An array as JSON numbers; a complex element as its [real, imaginary] pair."""
    if hasattr(value, "dtype") and value.dtype.kind == "c":
        value = np.stack([value.real, value.imag], axis=-1)
    return value.tolist() if hasattr(value, "tolist") else value


def result_to_json(result: EvaluateResult) -> str:
    """``{"loss", "value", "loss_tensor", "grads"}`` as JSON: keys one per line, arrays on one; NaN and
    infinities as protobuf's JSON strings (:func:`to_json`), as ``lossd watch`` writes them.

    >>> from lossd.client import EvaluateResult
    >>> print(result_to_json(EvaluateResult(float("nan"), np.array(float("nan")), {}, "mse_loss")))
    {
      "loss": "mse_loss",
      "value": "NaN",
      "loss_tensor": "NaN",
      "grads": {}
    }
    """
    fields = {
        "loss": to_json(result.loss_name),
        "value": to_json(result.value),
        "loss_tensor": to_json(_json_array(result.loss)),
    }
    grads = [f'    {to_json(k)}: {to_json(_json_array(v))}' for k, v in sorted(result.grads.items())]
    fields["grads"] = "{\n" + ",\n".join(grads) + "\n  }" if grads else "{}"
    return "{\n" + ",\n".join(f"  {to_json(k)}: {v}" for k, v in fields.items()) + "\n}"


# ---------------------------------------------------------------------------
# commands


def _serve(rest: list[str]) -> int:
    try:
        from ..server._logging import interrupts_deferred
        from ..server._openmp import quiet_openmp

        with interrupts_deferred():  # a Ctrl-C while torch and the server load: one line and exit 130, once loaded
            quiet_openmp()  # before the server imports torch
            from ..server._config import read_command_line

            # Before torch loads: a refused flag or security setting (exit 2) or --help answers at once
            read = read_command_line(rest)
            if read is None:
                return 2
            from ..server._app import run
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] in _SERVER_EXTRA_MODULES:
            print(_SERVER_EXTRA_HINT, file=sys.stderr)
            return 2
        raise
    return int(run(*read))


def _losses(client: Client, args: argparse.Namespace) -> int:
    losses = client.list_losses(args.filter)
    if args.json:
        dicts = [
            json_format.MessageToDict(
                info, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            for info in losses
        ]
        print(to_json(dicts, indent=2))
    else:
        print(format_losses_table(losses, None if args.wide else shutil.get_terminal_size().columns))
    return 0


def _eval(client: Client, args: argparse.Namespace) -> int:
    request = _build_eval_request(args)
    with warnings.catch_warnings(record=True) as seen:  # the CLI is one thread: safe here
        warnings.simplefilter("always", ServerWarning)
        result = client.evaluate_request(request, timeout=args.timeout)
    for w in seen:
        if issubclass(w.category, ServerWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    print(result_to_json(result))
    return 0


def _health(client: Client, args: argparse.Namespace) -> int:
    try:
        # the flag, else LOSSD_TIMEOUT, else 5 s (not the client's default minute: a probe is quick)
        timeout = args.timeout or (client.timeout if os.environ.get("LOSSD_TIMEOUT") else None) or 5.0
        status = client.health(args.service, timeout=timeout)
    except NotFound as e:
        e.message = f"the server has no health status for service {args.service!r}"
        raise
    print(status)
    return 0 if status == "SERVING" else 1


def format_result(result: TrainResult) -> str:
    """The final table of ``lossd train``: state, loss and every metric."""
    rows = [("job", result.job_id), ("state", result.state), ("epochs", str(len(result.history))),
            ("loss", f"{result.loss:.6g}")]
    rows += [(k, f"{v:.6g}") for k, v in result.metrics.items()]
    if result.message:
        rows.append(("message", printable(result.message)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _event_json(message: Any) -> str:
    return to_json(json_format.MessageToDict(message, preserving_proto_field_name=True), sort_keys=True)


class _TrainProgress(Progress):
    """``lossd train``'s progress (none with ``--no-progress``), which also keeps the job's id: Ctrl-C
    stops the client, not the job, and says so with the commands that reach it."""

    def __init__(self, show: bool) -> None:
        super().__init__(use_tqdm=None if show else False)
        self.show = show
        self.job_id = ""

    def update(self, event: Any) -> None:
        self.job_id = self.job_id or event.job_id
        if self.show:
            super().update(event)


def _train(client: Client, args: argparse.Namespace) -> int:
    progress = _TrainProgress(show=not args.no_progress)
    try:
        if args.detach:
            print(client.submit(args.spec, world_size=args.world_size, timeout=args.timeout))
            return 0
        result = client.train(args.spec, progress=progress, world_size=args.world_size, timeout=args.timeout)
    except KeyboardInterrupt:
        if progress.job_id:
            job = progress.job_id
            print(f"job {job} keeps running on the server: lossd watch {job} / lossd cancel {job}", file=sys.stderr,
                  flush=True)
        raise
    except OSError as e:
        raise CliError(f"{args.spec}: {e.strerror}") from None
    except ValueError as e:
        raise CliError(str(e)) from None
    print(_event_json(result.event) if args.json else format_result(result))
    return 0 if result.succeeded else 1


def _jobs(client: Client, args: argparse.Namespace) -> int:
    try:
        found = client.jobs(args.state, args.limit, timeout=args.timeout)
    except ValueError as e:
        raise CliError(f"--state: {e}") from None
    print(jobs_table(found))
    return 0


def _watch(client: Client, args: argparse.Namespace) -> int:
    last = None
    for event in client.watch(args.job_id, args.after_seq, timeout=args.timeout):
        print(_event_json(event), flush=True)
        last = event
    return 0 if last is None or state_name(last.state) in ("SUCCEEDED", "QUEUED", "RUNNING") else 1


def _cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel(args.job_id, timeout=args.timeout)
    print(f"{job.job_id} {state_name(job.state)}")
    return 0


def _plot(client: Client, args: argparse.Namespace) -> int:
    from ._plot import plot_history, require_matplotlib

    require_matplotlib()  # before any call: a missing extra is said at once
    job = client.get_job(args.job_id, timeout=args.timeout)
    history = client.history(args.job_id, timeout=args.timeout)
    try:
        plot_history(history, title=f"job {job.job_id} {job.name} ({state_name(job.state)})".replace("  ", " "),
                     path=args.out)
    except (MissingExtra, ValueError, OSError) as e:
        raise CliError(str(e)) from None
    print(args.out)
    return 0


def _join(client: Client, args: argparse.Namespace) -> int:
    try:
        distributed = importlib.import_module("lossd.server.training._distributed")
    except ModuleNotFoundError as e:
        raise CliError(f"joining a job runs training ranks here: it needs the server extra "
                       f"({EXTRAS['server']}): {e}") from None
    try:
        distributed.rendezvous_address(args.rdzv_endpoint)  # before anything is asked or built
    except ValueError as e:
        raise CliError(str(e)) from None
    job = client.get_job(args.job_id, timeout=args.timeout)
    if job.state in TERMINAL_STATES:
        raise CliError(f"job {job.job_id} has ended ({state_name(job.state)}): there is nothing to join")
    if why := distributed.nothing_to_join(job.spec, job.job_id):  # before the line that says it joins
        raise CliError(why)
    print(f"joining job {job.job_id} ({max(job.spec.world_size, 1)} ranks on {job.spec.nodes} machines) through "
          f"{args.rdzv_endpoint}; waiting for it to start", file=sys.stderr, flush=True)

    def job_ended() -> str:  # asked while the job has not started: a job cancelled meanwhile never will
        try:
            state = client.get_job(job.job_id, timeout=args.timeout).state
        except LossdError:
            return ""  # the server is away for a moment: the wait goes on (its rendezvous says if it is gone)
        return f"job {job.job_id} ended ({state_name(state)}) before it started" if state in TERMINAL_STATES else ""

    try:
        message = distributed.join_job(job.spec, job.job_id, args.rdzv_endpoint,
                                       os.environ.get("LOSSD_PLUGINS", "all"), job_ended)
    except (RuntimeError, OSError) as e:  # torch.distributed's own (DistNetworkError) past the checks above
        raise CliError(f"joining job {job.job_id} failed: {first_line(e)}") from None
    if message:
        raise CliError(message)
    print(f"{job.job_id} joined: this machine's ranks finished")
    return 0


_COMMANDS = {"health": _health, "losses": _losses, "eval": _eval, "train": _train, "jobs": _jobs, "watch": _watch,
             "cancel": _cancel, "plot": _plot, "join": _join}


def _tls_text(target: str, lowered: str, tls: bool) -> str:
    """What went wrong, and what to check, when a server answered at ``target`` but no TLS connection came
    of it (``lowered``: gRPC's detail; ``tls``: whether we spoke TLS)."""
    if "wrong_version_number" in lowered:
        return (f"the TLS handshake with {target} failed: the server there does not speak TLS: drop --tls / "
                "--ca-file / --cert-file (LOSSD_TLS, LOSSD_CA_FILE, LOSSD_CERT_FILE) for a plaintext server")
    if tls:
        return (f"the TLS handshake with {target} failed: check --ca-file (the CA of the server's certificate), "
                "--cert-file and --key-file (a server with mutual TLS wants a client certificate from its CA) "
                "and --server-name")
    return (f"a server at {target} closed the connection: if it serves TLS, give --ca-file (or --tls for a "
            "certificate the system trusts), and --cert-file and --key-file for mutual TLS")


def _unavailable_text(e: Unavailable, target: str, tls: bool) -> str:
    """An UNAVAILABLE error with the target tried and, when nothing answered, how to start a server, or,
    when a server answered but the TLS handshake failed, which TLS settings to check (``tls``: ours)."""
    text = f"{e} (target {target})"
    lowered = e.message.lower()
    # "failed to connect": no connection was made (a call cut off later may say "Socket closed" too)
    if "failed to connect" in lowered and any(failure in lowered for failure in _TLS_FAILURES):
        text = f"UNAVAILABLE: {_tls_text(target, lowered, tls)} ({e.message})"
    elif "failed to connect" in lowered or "connection refused" in lowered or "dns resolution failed" in lowered:
        text = f"UNAVAILABLE: no lossd server answers at {target}: {_START_HINT} ({e.message})"
    return text


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (``lossd losses --json | head``): stop quietly.

    stdout is pointed at /dev/null so that the interpreter's last flush cannot fail
    again; the exit status is a shell's for a process ended by SIGPIPE (128 + 13).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lossd`` console script; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    index, command = _split_command(args_list)
    if command == "serve":
        return _serve(args_list[index + 1:])

    parser = build_parser()
    args = parser.parse_args(args_list)
    for name, value in vars(args).items():  # an argument of bytes that are not UTF-8 (Python keeps them as
        for text in value if isinstance(value, list) else [value]:  # surrogates, which nothing can send)
            if isinstance(text, str) and not text.isascii() and _surrogates(text):
                parser.exit(2, f"lossd: error: {_argument(parser, name)}: not valid UTF-8: {text!r}\n")
    try:
        client = Client(**{s.name: getattr(args, s.name) for s in _CONNECTION})
    except (ValueError, UnicodeError) as e:  # a connection setting (--ca-file, LOSSD_TIMEOUT, ...)
        parser.exit(2, f"lossd: error: {e}\n")
    try:
        with client:
            status = _COMMANDS[args.command](client, args)
            if sys.stdout is not None:  # a reader gone is found here, not in the interpreter's last flush
                sys.stdout.flush()
            return status
    except CliError as e:
        parser.exit(2, f"lossd {args.command}: error: {e}\n")
    except MissingExtra as e:
        parser.exit(2, f"lossd {args.command}: error: {e}\n")
    except Unavailable as e:
        print(f"error: {_unavailable_text(e, client.target, client.config.tls)}", file=sys.stderr)
        return 1
    except LossdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except OSError as e:  # stdout closed, a full disk
        print(f"lossd {args.command}: error: writing the output: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError("unreachable")  # pragma: no cover


def _surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _argument(parser: argparse.ArgumentParser, dest: str) -> str:
    """How the user wrote the argument stored as ``dest``: its flag (``--param``), or its name."""
    for action in parser._actions:  # subcommands' actions are in their own parsers: the name then
        if action.dest == dest and action.option_strings:
            return action.option_strings[-1]
    return f"--{dest.replace('_', '-')}" if dest not in ("loss", "job_id", "spec", "command") else dest


if __name__ == "__main__":
    sys.exit(main())
