"""The container commands in the docs are the ones `make image-test` runs.

README.md's Deployment section and docs/deployment.md show podman (and
debootstrap, tar, pip download) commands in ```bash blocks, which
test_readme does not run. Here every such command is matched against
deploy/image_test.sh: the same podman subcommand must appear there, with every
flag the docs use and, flag by flag, the same value — except names and ports,
which the script picks for itself (``--name``, ``-p``, ``-v``). The script's
simple variables (``IMAGE=...``) are filled in first. Also: the Makefile's
``image-test`` target runs the script, and .ci/run's choice is documented.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "image_test.sh"
DOCS = REPO / "docs" / "deployment.md"
README = REPO / "README.md"

#: Options whose values are the script's own choice (container/volume names, host ports).
FREE_VALUES = {"--name", "-p", "-v"}
#: Options that take no value.
FLAGS = {"-d", "--read-only", "--rm", "-a", "-f", "-q", "--quiet", "--numeric-owner", "--disable-pip-version-check"}


def _joined_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined and trailing comments dropped."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((pending + line).strip())
        pending = ""
    return out


def _tokens(line: str) -> list[str]:
    """Shell words of the first command on ``line`` that starts one of ours, also inside
    ``$( ... )``; [] for lines that are not shell (the script's Python heredocs)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:
        return []
    for i, token in enumerate(tokens):
        if token.endswith("$(podman"):
            tokens = ["podman", *tokens[i + 1:]]
            break
    for stop in ("|", "||", "&&", ";", ">", "2>", "<", "&"):
        if stop in tokens:
            tokens = tokens[: tokens.index(stop)]
    if tokens and tokens[-1].endswith(")") and not tokens[-1].endswith("$()"):
        tokens[-1] = tokens[-1][:-1]  # the end of $( ... )
    return tokens


def _script_vars(text: str) -> dict[str, str]:
    """Simple assignments (NAME=value with no command substitution), for ${NAME} expansion."""
    found = {}
    for m in re.finditer(r"^([A-Z_]+)=([^\s$`(]+)(?:\s+#.*)?$", text, re.M):
        found[m.group(1)] = m.group(2)
    return found


def _expand(token: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: variables.get(m.group(1), m.group(0)), token)


def _command(tokens: list[str]) -> tuple[str, list[str]] | None:
    """(command key, the rest) for the commands this test follows, else None."""
    while tokens and tokens[0] in ("quiet_systemd", "command", "exec"):
        tokens = tokens[1:]
    if not tokens:
        return None
    if tokens[0] == "podman":
        rest = tokens[1:]
        sub = rest[0] if rest else ""
        if sub in ("volume", "healthcheck", "image") and len(rest) > 1:
            return f"podman {sub} {rest[1]}", rest[2:]
        return f"podman {sub}", rest[1:]
    if tokens[0] in ("debootstrap", "tar"):
        return tokens[0], tokens[1:]
    if tokens[1:4] == ["-m", "pip", "download"]:
        return "pip download", tokens[4:]
    return None


def _options(args: list[str], key: str = "") -> tuple[list[tuple[str, str]], list[str]]:
    """(option, value) pairs and positional arguments."""
    flags = FLAGS - {"-d"} if key == "pip download" else FLAGS
    pairs, positional = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and arg != "-":
            if "=" in arg and arg.startswith("--"):
                name, value = arg.split("=", 1)
                pairs.append((name, value))
            elif arg in flags or i + 1 >= len(args) or args[i + 1].startswith("-"):
                pairs.append((arg, ""))
            else:
                pairs.append((arg, args[i + 1]))
                i += 1
        else:
            positional.append(arg)
        i += 1
    return pairs, positional


def script_commands() -> dict[str, list[list[tuple[str, str]]]]:
    text = SCRIPT.read_text()
    variables = _script_vars(text)
    commands: dict[str, list[list[tuple[str, str]]]] = {}
    for line in _joined_lines(text):
        found = _command([_expand(t, variables) for t in _tokens(line)])
        if found:
            key, rest = found
            commands.setdefault(key, []).append(_options(rest, key)[0])
    return commands


def _bash_blocks(markdown: str, section: str | None = None) -> list[str]:
    if section is not None:
        start = markdown.index(f"\n## {section}\n")
        end = markdown.find("\n## ", start + 1)
        markdown = markdown[start: end if end != -1 else None]
    return re.findall(r"^```bash\n(.*?)^```", markdown, re.M | re.S)


def doc_commands() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(where, command key, options) for every followed command in the docs' bash blocks."""
    out = []
    sources = [("docs/deployment.md", _bash_blocks(DOCS.read_text())),
               ("README.md#Deployment", _bash_blocks(README.read_text(), "Deployment"))]
    for where, blocks in sources:
        for block in blocks:
            for line in _joined_lines(block):
                found = _command(_tokens(line))
                if found:
                    out.append((where, found[0], _options(found[1], found[0])[0]))
    return out


SCRIPT_COMMANDS = script_commands()
DOC_COMMANDS = doc_commands()


def test_the_docs_show_the_image_test_commands() -> None:
    keys = {key for _, key, _ in DOC_COMMANDS}
    assert {"podman build", "podman run", "podman stop", "podman healthcheck run", "podman logs",
            "podman import", "debootstrap", "pip download"} <= keys, keys
    readme_keys = {key for where, key, _ in DOC_COMMANDS if where.startswith("README")}
    assert {"podman run", "podman stop", "podman healthcheck run"} <= readme_keys


@pytest.mark.parametrize(("where", "key", "options"), DOC_COMMANDS,
                         ids=[f"{w}:{k}:{i}" for i, (w, k, _) in enumerate(DOC_COMMANDS)])
def test_doc_command_matches_the_script(where: str, key: str, options: list[tuple[str, str]]) -> None:
    candidates = SCRIPT_COMMANDS.get(key)
    assert candidates, f"{where}: `{key}` is not a command deploy/image_test.sh runs"

    def covered(script_options: list[tuple[str, str]]) -> list[str]:
        missing = []
        for name, value in options:
            if name in FREE_VALUES:
                ok = any(n == name for n, _ in script_options)
            elif key in ("debootstrap", "tar", "pip download") and name in ("-C", "-cf", "-d"):
                ok = any(n == name for n, _ in script_options)  # paths under the script's cache dir
            else:
                ok = (name, value) in script_options
            if not ok:
                missing.append(f"{name} {value}".strip())
        return missing

    results = [covered(c) for c in candidates]
    best = min(results, key=len)
    assert not best, f"{where}: `{key}` uses {best}, which deploy/image_test.sh does not"


def test_script_is_what_make_image_test_runs() -> None:
    makefile = (REPO / "Makefile").read_text()
    target = re.search(r"^image-test:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert target and "deploy/image_test.sh" in target.group(1)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in SCRIPT.read_text()


def test_ci_choice_is_documented() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    docs = DOCS.read_text()
    if "image-test" in ci:
        assert "`.ci/run` runs it" in docs
    else:
        assert "not in `.ci/run`" in docs
