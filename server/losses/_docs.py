"""Render the loss reference (``docs/losses.md``) from the registry.

The reference is generated, never edited by hand, so it cannot drift from
what ``ListLosses`` publishes. Regenerate with ``make docs`` (which runs
``python -m lossd.server.losses._docs --out docs/losses.md``); ``--check`` exits 1
when the file on disk is stale, and so does ``tests/repo/test_docs.py``.

Every loss gets an example request in grpcurl's JSON, built from the
registry entry's own example tensors with ``values`` encoding::

    >>> from lossd.server.losses import REGISTRY
    >>> example_request(REGISTRY.get("ce"))["inputs"]["target"]
    {'dtype': 'int64', 'shape': [2], 'values': [0, 2]}
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._methods import EVALUATE_LOSS, LIST_LOSSES
from ._dtypes import WIRE_NAMES
from ._registry import MAX_LOSS_WORK, REGISTRY, Input, LossSpec, Param, Registry

__all__ = ["render_losses_markdown", "example_request", "example_request_json", "grpcurl_command", "main"]

#: Address used in the generated examples: what ``make run`` serves on.
EXAMPLE_ADDRESS = "127.0.0.1:50051"
EVALUATE_METHOD = EVALUATE_LOSS.path.lstrip("/")


def _number(x: float, dtype: torch.dtype) -> int | float | str:
    """A float as the shortest text that round-trips in ``dtype``; whole numbers as ints.

    Non-finite numbers use proto3 JSON's spelling ("NaN", "Infinity", "-Infinity").
    """
    if not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    if dtype == torch.float16:
        x = float(str(np.float16(x)))
    elif dtype != torch.float64:  # float32, and bfloat16 (whose values are float32 values)
        x = float(str(np.float32(x)))
    return int(x) if x.is_integer() else x


def _plain(value: Any) -> Any:
    """A params value as plain JSON-able Python (tuples as lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item"):  # numpy or torch scalar
        return value.item()
    return value


def _tensor_json(t: torch.Tensor) -> dict[str, Any]:
    t = t.detach().cpu()
    if t.is_floating_point():
        values: list[Any] = [_number(float(v), t.dtype) for v in t.reshape(-1).tolist()]
    else:
        values = [int(v) for v in t.reshape(-1).tolist()]
    return {"dtype": WIRE_NAMES[t.dtype], "shape": list(t.shape), "values": values}


def example_request(spec: LossSpec, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The loss's example as an ``EvaluateLossRequest`` in proto JSON (``values`` encoding)."""
    tensors, params = spec.example_inputs(dtype)
    request: dict[str, Any] = {
        "loss": spec.name,
        "inputs": {name: _tensor_json(t) for name, t in tensors.items()},
    }
    if params:
        request["params"] = _plain(dict(params))
    return request


def example_request_json(spec: LossSpec, dtype: torch.dtype = torch.float32) -> str:
    """:func:`example_request` as readable JSON: one line per tensor."""
    request = example_request(spec, dtype)
    lines = ["{", f'  "loss": {json.dumps(request["loss"])},', '  "inputs": {']
    tensors = [f"    {json.dumps(name)}: {json.dumps(t)}" for name, t in request["inputs"].items()]
    lines.append(",\n".join(tensors))
    if "params" in request:
        lines.append("  },")
        lines.append(f'  "params": {json.dumps(request["params"])}')
    else:
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines)


def grpcurl_command(spec: LossSpec, address: str = EXAMPLE_ADDRESS) -> str:
    """A shell command that evaluates the loss's example with grpcurl (request on stdin)."""
    return (
        f"grpcurl -plaintext -d @ {address} {EVALUATE_METHOD} <<'EOF'\n"
        f"{example_request_json(spec)}\nEOF"
    )


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|") or "—"


def _code(text: str) -> str:
    return f"`{text}`".replace("|", "\\|")


def _json_text(value: Any, param: Param) -> str:
    if param.type == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return json.dumps(float(value))
    return json.dumps(value)


def _allowed(param: Param) -> str:
    if param.choices:
        return ", ".join(_code(json.dumps(c)) for c in param.choices)
    if param.range_text():
        return _code(param.range_text())
    if param.type == "bool":
        return "`true`, `false`"
    return "any"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _input_row(i: Input) -> list[str]:
    return [
        _code(i.name),
        _cell(i.role),
        _code(i.kind),
        "yes" if i.differentiable else "no",
        "yes" if i.required else "no",
        ", ".join(_code(a) for a in i.aliases) or "—",
        _cell(i.doc),
    ]


def _param_row(p: Param) -> list[str]:
    default = _code(_json_text(p.default, p))
    return [_code(p.name), _code(p.type + (" or null" if p.nullable else "")), default, _allowed(p), _cell(p.doc)]


def _batched(spec: LossSpec) -> str:
    """How a batch evaluates the loss (EvaluateLossBatch, --batch-window-us)."""
    return "vectorized" if spec.vectorized else "one by one"


def _loss_section(spec: LossSpec) -> list[str]:
    out = [f"## {spec.name}", "", _cell(spec.description), ""]
    out.append(f"- **Aliases:** {', '.join(_code(a) for a in spec.aliases) or '—'}")
    out.append(f"- **Source:** {_code(spec.source) if spec.source else '—'}")
    out.append(f"- **Float dtypes:** {', '.join(spec.float_dtypes)}")
    out.append(f"- **In a batch:** {_batched(spec)}")
    if spec.notes:
        out.append(f"- **Notes:** {_cell(spec.notes)}")
    out.append("- **Computed with a warning, refused when `strict`** (outside torch's documented domain): "
               + ("; ".join(_cell(d.describe()) for d in spec.domain) or "none"))
    why = ("torch would crash, read out of bounds, hang or return a meaningless number"
           if spec.source.startswith("torch.") else "outside the loss's definition")
    refuses = [*spec.refuses]
    counted = ("RESOURCE_EXHAUSTED, counted from the shapes before the loss runs; the default limit, which a server "
               "sets with `--max-loss-work`")
    if spec.work:
        refuses.append(f"{spec.work.what} past {MAX_LOSS_WORK} elements ({counted})")
    if spec.broadcasts:
        refuses.append(f"{', '.join(spec.broadcasts)} broadcasting to more than {MAX_LOSS_WORK} elements and more "
                       f"than the largest input ({counted})")
    out.append(f"- **Always refused** ({why}): " + ("; ".join(_cell(r) for r in refuses) or "none"))
    out += ["", "**Inputs** (in torch's argument order)", ""]
    out += _table(("Name", "Role", "Dtype kind", "Gradient", "Required", "Aliases", "Description"),
                  (_input_row(i) for i in spec.inputs))
    out += [""]
    if spec.params:
        out += ["**Parameters** (in `params`)", ""]
        out += _table(("Name", "Type", "Default", "Allowed", "Description"), (_param_row(p) for p in spec.params))
    else:
        out += ["**Parameters:** none."]
    if spec.equivalents:
        out += ["", "**Same numbers as the libraries** (checked by `tests/unit/test_loss_libraries.py`)", ""]
        out += _table(("Library call", "lossd `params`", "Note"),
                      ([_code(e.call), _code(json.dumps(_plain(dict(e.params)))) if e.params else "defaults",
                        _cell(e.note)] for e in spec.equivalents))
    elif spec.source.startswith("lossd"):
        out += ["", "**Same numbers as the libraries:** none of kornia, segmentation_models_pytorch, MONAI, "
                "torchvision and pytorch-toolbelt ships this loss."]
    out += ["", "**Example** (float32, `values` encoding; the reply uses `values` too)", "", "```bash",
            grpcurl_command(spec), "```", ""]
    return out


def render_losses_markdown(registry: Registry = REGISTRY) -> str:
    """The whole loss reference as Markdown; deterministic for a given registry."""
    specs = list(registry)
    out = [
        "# Loss reference",
        "",
        "<!-- Generated from the server's loss registry by `python -m lossd.server.losses._docs`",
        "     (`make docs`). Do not edit by hand: tests/repo/test_docs.py fails when it is stale. -->",
        "",
        f"lossd serves {len(specs)} loss{'es' if len(specs) != 1 else ''}. This page is generated from the same "
        "registry that",
        "`ListLosses` publishes (`lossd losses`, or `grpcurl -plaintext 127.0.0.1:50051",
        f"{LIST_LOSSES.path.lstrip('/')}`), so the two always agree.",
        "",
        "How to read it:",
        "",
        "- A loss is named by its canonical name (torch's functional name) or any alias;",
        "  aliases are case-insensitive and may carry a `torch.nn.` / `nn.` / `F.` prefix.",
        "- Inputs travel in `inputs`, keyed by torch's argument name; `y_pred` and `y_true`",
        "  are accepted for the first two (prediction first, as in PyTorch). A `float` input",
        "  takes any dtype torch computes with (floating-point, complex, integer, bool) and",
        "  torch's type promotion decides the result, as locally (`mse_loss(float32, int64)`",
        "  is float32); an `int` input needs an integer dtype (sent to torch as int64).",
        "  An input torch also takes as a Python number or list (gaussian_nll_loss `var`, CTC",
        "  lengths) may be sent in `params` under its name; `null` there means an absent",
        "  optional input.",
        "- Gradients are returned for every differentiable floating-point or complex input",
        "  unless `grad_inputs` names a subset (naming an integer or bool input is refused);",
        "  for `reduction: \"none\"` send `grad_output` to get a vector-Jacobian product.",
        "- Each loss lists two kinds of rule. Outside torch's documented domain but well",
        "  defined (a target other than 1/-1, labels outside [0, 1], ...): computed as torch",
        "  computes it, with a warning in the reply's `warnings` naming the field and the",
        "  domain; a request that sets `strict` is refused instead. Where torch would crash,",
        "  read out of bounds, hang or return a meaningless number: always `INVALID_ARGUMENT`.",
        "  torch's own warnings (kl_div `reduction='mean'`, target-size broadcasting) reach",
        "  the caller in `warnings` too.",
        "- Parameters travel in `params` as JSON values; unknown parameters, wrong types and",
        "  values outside the allowed range are refused with `INVALID_ARGUMENT`. Numbers are",
        "  finite, but for a norm degree `p` where torch takes `inf` (`pairwise_distance`,",
        "  `triplet_margin_loss`). The deprecated `size_average` and `reduce` (true, false or",
        "  null) become `reduction` as torch makes them, with torch's deprecation warning, for",
        "  the losses whose torch functional takes them (null ones leave `reduction` as sent);",
        "  every other loss refuses them, as torch does. A number parameter of a loss lossd",
        "  defines (source not torch) must also fit float32, or float64 where a tensor is",
        "  float64 (`smooth: 1e39` on float32 would be infinite there and the loss NaN; most of",
        "  these losses compute half precision in float32); torch's own losses take what torch takes.",
        "- NaN and infinite values in `inputs`, `parameters` and `grad_output` are refused",
        "  with `INVALID_ARGUMENT`, naming the tensor, what was found and its first flat index",
        "  (`inputs.input: contains NaN at flat index 3 ...`); a request that sets",
        "  `allow_non_finite` gets torch's result as it is, NaN included, bit for bit.",
        "- Sizes are checked from the shapes before anything is allocated: elements per tensor",
        "  (`--max-tensor-elements`), elements per request (`--max-request-elements`), tensors",
        "  per request (`--max-tensors`) and objective terms (`--max-terms`) answer",
        "  `RESOURCE_EXHAUSTED` naming the limit and its flag.",
        "",
        "- In an `EvaluateLossBatch` (the SDK's `evaluate_many`) or under `--batch-window-us`,",
        "  items of a loss marked **vectorized** below that share params, dtypes and shapes",
        "  (required inputs only, 1 to 16384 elements each) run as one torch call, bit-identical",
        "  to one at a time (tests/unit/test_vectorized.py proves it); every other item, and",
        "  every other loss, is evaluated one by one.",
        "",
        "## Index",
        "",
    ]
    out += _table(
        ("Loss", "Aliases", "In a batch", "Description"),
        (
            [f"[{_code(s.name)}](#{s.name.lower()})", ", ".join(_code(a) for a in s.aliases) or "—",
             _batched(s), _cell(s.description)]
            for s in specs
        ),
    )
    out.append("")
    for spec in specs:
        out += _loss_section(spec)
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lossd.server.losses._docs [--check] [--out docs/losses.md]``."""
    parser = argparse.ArgumentParser(
        prog="python -m lossd.server.losses._docs", description="Generate the loss reference from the registry."
    )
    parser.add_argument("--out", default="docs/losses.md", help="file to write ('-': stdout; default %(default)s)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from a fresh render")
    args = parser.parse_args(argv)
    text = render_losses_markdown(REGISTRY)
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    path = Path(args.out)
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            print(
                f"{path} is stale: run `make docs` (python -m lossd.server.losses._docs --out {path})", file=sys.stderr
            )
            return 1
        print(f"{path} is up to date ({len(REGISTRY)} losses)")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({len(REGISTRY)} losses)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
