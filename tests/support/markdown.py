"""Executable examples in Markdown docs (README.md, docs/sdk.md): parsing and output matching.

Conventions:

- A ```python block runs as a script (``Client()`` finds the server through
  ``LOSSD_TARGET``). A ```text block right after it is its expected stdout.
- A ```console block is a shell session: ``$ `` lines are commands, the lines
  up to the next ``$ `` their expected output (stdout and stderr).
- Other blocks (```bash, ...) are not run.

Expected output matches when its text matches, whitespace runs aside; numbers
match to a relative 1e-5 (float32 results may differ in the last bit between
CPUs); ``...`` matches anything.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Block", "Example", "fenced_blocks", "markdown_examples", "output_matches", "run_python_example", "report",
]

_NUMBER = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(r"(\.\.\.|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


@dataclass
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence
    end: int  # 1-based line of the closing fence


def fenced_blocks(markdown: str, source: str = "README.md") -> list[Block]:
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
            assert i < len(lines), f"{source}:{start + 1}: unclosed code fence"
            blocks.append(Block(m.group(1), "\n".join(body) + "\n", start + 1, i + 1))
        i += 1
    return blocks


@dataclass
class Example:
    kind: str  # "python" or "console"
    code: str
    expected: str | None
    line: int
    source: str = "README.md"

    @property
    def id(self) -> str:
        first = self.code.strip().splitlines()[-1 if self.kind == "python" else 0][:50]
        return f"L{self.line}-{self.kind}: {first}"


def markdown_examples(markdown: str, source: str = "README.md") -> list[Example]:
    """The python and console examples of a Markdown text, with their expected output."""
    blocks = fenced_blocks(markdown, source)
    lines = markdown.splitlines()
    examples = []
    for k, b in enumerate(blocks):
        if b.lang == "python":
            nxt = blocks[k + 1] if k + 1 < len(blocks) else None
            follows = nxt is not None and nxt.lang == "text" and not any(
                lines[j].strip() for j in range(b.end, nxt.line - 1)
            )
            examples.append(Example("python", b.text, nxt.text if follows and nxt else None, b.line, source))
        elif b.lang == "console":
            examples += _console_examples(b, source)
    return examples


def _console_examples(block: Block, source: str) -> list[Example]:
    examples: list[Example] = []
    for offset, line in enumerate(block.text.splitlines()):
        if line.startswith("$ "):
            examples.append(Example("console", line[2:], "", block.line + 1 + offset, source))
        else:
            assert examples, f"{source}:{block.line}: console block must start with a '$ ' command"
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


def report(ex: Example, proc: subprocess.CompletedProcess[str]) -> str:
    """A failure message: where the example is, its code, what was expected and what came."""
    return (
        f"{ex.source}:{ex.line}: {ex.kind} example\n--- code\n{ex.code}\n--- expected\n{ex.expected}"
        f"--- got (exit {proc.returncode})\n{proc.stdout}{proc.stderr or ''}"
    )


def run_python_example(ex: Example, cwd: Path, env: dict[str, str]) -> None:
    """Run a python example as a script; assert it succeeds and prints what the doc says."""
    proc = subprocess.run(
        [sys.executable, "-c", ex.code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, report(ex, proc)
    if ex.expected is not None:
        assert output_matches(ex.expected, proc.stdout), report(ex, proc)
