"""The README's examples run, against a real server, and print what the README says.

Conventions in README.md:

- A ```python block runs as a script (``Client()`` finds the server through
  ``LOSSD_TARGET``). A ```text block right after it is its expected stdout.
- A ```console block is a shell session: ``$ `` lines are commands (only
  ``lossd`` and ``grpcurl``), the lines up to the next ``$ `` their expected
  output (stdout and stderr). ``127.0.0.1:50051`` is replaced by the test
  server's address.
- ```bash blocks (``make run``, ``make test``) are not run.

Expected output matches when its text matches, whitespace runs aside; numbers
match to a relative 1e-5 (float32 results may differ in the last bit between
CPUs); ``...`` matches anything.
"""

from __future__ import annotations

import math
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.tools import tool_env

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
README_ADDRESS = "127.0.0.1:50051"

_NUMBER = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(r"(\.\.\.|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


@dataclass
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence
    end: int  # 1-based line of the closing fence


def fenced_blocks(markdown: str) -> list[Block]:
    """Every fenced code block, in order."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if m:
            start = i
            i += 1
            body = []
            while i < len(lines) and lines[i].rstrip() != "```":
                body.append(lines[i])
                i += 1
            assert i < len(lines), f"README.md:{start + 1}: unclosed code fence"
            blocks.append(Block(m.group(1), "\n".join(body) + "\n", start + 1, i + 1))
        i += 1
    return blocks


@dataclass
class Example:
    kind: str  # "python" or "console"
    code: str
    expected: str | None
    line: int

    @property
    def id(self) -> str:
        first = self.code.strip().splitlines()[-1 if self.kind == "python" else 0][:50]
        return f"L{self.line}-{self.kind}: {first}"


def readme_examples(markdown: str) -> list[Example]:
    blocks = fenced_blocks(markdown)
    lines = markdown.splitlines()
    examples = []
    for k, b in enumerate(blocks):
        if b.lang == "python":
            nxt = blocks[k + 1] if k + 1 < len(blocks) else None
            follows = nxt is not None and nxt.lang == "text" and not any(
                lines[j].strip() for j in range(b.end, nxt.line - 1)
            )
            examples.append(Example("python", b.text, nxt.text if follows and nxt else None, b.line))
        elif b.lang == "console":
            examples += _console_examples(b)
    return examples


def _console_examples(block: Block) -> list[Example]:
    examples: list[Example] = []
    for offset, line in enumerate(block.text.splitlines()):
        if line.startswith("$ "):
            examples.append(Example("console", line[2:], "", block.line + 1 + offset))
        else:
            assert examples, f"README.md:{block.line}: console block must start with a '$ ' command"
            examples[-1].expected = (examples[-1].expected or "") + line + "\n"
    return examples


def _pattern(expected: str) -> tuple[re.Pattern[str], list[str]]:
    parts, numbers = [], []
    for k, token in enumerate(_TOKEN.split(expected)):
        if k % 2:  # a number or "..."
            if token == "...":
                parts.append(r".*?")
            else:
                parts.append(f"({_NUMBER})")
                numbers.append(token)
        else:
            parts += [re.escape(word) for word in token.split()]
    return re.compile(r"\s*" + r"\s*".join(parts) + r"\s*", re.DOTALL), numbers


def output_matches(expected: str, actual: str) -> bool:
    """Text equal up to whitespace runs, numbers to rel 1e-5, ``...`` as a wildcard."""
    pattern, numbers = _pattern(expected)
    m = pattern.fullmatch(actual)
    if m is None:
        return False
    return all(
        math.isclose(float(e), float(a), rel_tol=1e-5, abs_tol=1e-12) for e, a in zip(numbers, m.groups())
    )


EXAMPLES = readme_examples(README.read_text(encoding="utf-8"))


def _report(ex: Example, proc: subprocess.CompletedProcess[str]) -> str:
    return (
        f"README.md:{ex.line}: {ex.kind} example\n--- code\n{ex.code}\n--- expected\n{ex.expected}"
        f"--- got (exit {proc.returncode})\n{proc.stdout}{proc.stderr or ''}"
    )


@pytest.mark.parametrize("ex", [e for e in EXAMPLES if e.kind == "python"], ids=lambda e: e.id)
def test_python_example(ex: Example, served_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        [sys.executable, "-c", ex.code], cwd=tmp_path, env=tool_env(LOSSD_TARGET=served_process.address),
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, _report(ex, proc)
    if ex.expected is not None:
        assert output_matches(ex.expected, proc.stdout), _report(ex, proc)


@pytest.mark.parametrize("ex", [e for e in EXAMPLES if e.kind == "console"], ids=lambda e: e.id)
def test_console_example(ex: Example, served_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    argv = shlex.split(ex.code.replace(README_ADDRESS, served_process.address))
    assert argv[0] in ("lossd", "grpcurl"), f"README.md:{ex.line}: only lossd and grpcurl commands are run"
    proc = subprocess.run(
        argv, cwd=tmp_path, env=tool_env(LOSSD_TARGET=served_process.address),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )
    expected = ex.expected or ""
    assert proc.returncode == (1 if expected.startswith(("error:", "ERROR:")) else 0), _report(ex, proc)
    assert output_matches(expected, proc.stdout), _report(ex, proc)


def test_readme_has_examples_of_each_kind() -> None:
    kinds = {(e.kind, e.code.split()[0] if e.kind == "console" else "python") for e in EXAMPLES}
    assert {("python", "python"), ("console", "lossd"), ("console", "grpcurl")} <= kinds
    assert all(e.expected is not None for e in EXAMPLES if e.kind == "python" and "print(" in e.code)


def test_readme_opens_with_what_lossd_is_then_make_run_and_make_test() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.startswith("# lossd\n")
    first = fenced_blocks(text)[0]
    commands = [line.split("#")[0].strip() for line in first.text.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    intro = text[: text.index("```")]
    assert "PyTorch" in intro and "gRPC" in intro


def test_readme_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?!https?://)[^)#]+)\)", text)
    assert "docs/losses.md" in links and "docs/design.md" in links
    for link in links:
        assert (REPO / link).exists(), f"README.md links to {link}, which does not exist"


def test_configuration_table_covers_every_serve_flag_and_env_var() -> None:
    from lossd.server._app import build_parser

    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Configuration"):]
    section = section[: section.index("\n## ", 1)]
    flags = [s for a in build_parser()._actions for s in a.option_strings if s not in ("-h", "--help")]
    assert flags
    for flag in flags:
        assert f"`{flag}`" in section, f"README's Configuration section misses `lossd serve {flag}`"
    source = (REPO / "server" / "_app.py").read_text(encoding="utf-8")
    for env in sorted(set(re.findall(r"LOSSD_[A-Z_]+", source))):
        assert f"`{env}" in section, f"README's Configuration section misses {env}"


@pytest.mark.parametrize(
    "expected, actual, ok",
    [
        ("0.5493 cross_entropy float32 (2, 3)\n", "0.5493 cross_entropy float32 (2, 3)\n", True),
        ("value 0.5493288636207581\n", "value 0.5493288\n", True),
        ("value 0.5493\n", "value 0.5494\n", False),
        ('"timing": {...}\n}', '"timing": {\n  "a": 1.5\n}\n}\n', True),
        ("NAME  ALIASES\nmse_loss  MSELoss\n", "NAME      ALIASES\nmse_loss  MSELoss\n", True),
        ("a b\n", "a c\n", False),
        ("[-1.  2.]\n", "[-1.  2.]\n", True),
        ("-2.2709369659423828e-05\n", "-2.27093697e-05\n", True),
    ],
)
def test_output_matcher(expected: str, actual: str, ok: bool) -> None:
    assert output_matches(expected, actual) is ok
