"""The README's examples (and docs/training.md's) run, against a real server, and print what they say.

Conventions (the machinery is shared with docs/sdk.md: tests/support/markdown.py):

- A ```python block runs as a script (``Client()`` finds the server through
  ``LOSSD_TARGET``). A ```text block right after it is its expected stdout.
- A ```console block is a shell session: ``$ `` lines are commands (only
  ``lossd`` and ``grpcurl``), the lines up to the next ``$ `` their expected
  output (stdout and stderr). ``127.0.0.1:50051`` is replaced by the test
  server's address.
- The README's Deployment section is about the image, which needs a token: its console
  examples run against a server started with ``LOSSD_TOKEN`` (``$TOKEN`` in them is that
  token), from an environment without it.
- ```bash blocks (``make run``, ``make test``, ``pip install``) are not run
  (tests/integration/test_dist.py builds and installs the wheel as ``make dist`` does).
- Examples run in an empty folder that holds the clone's ``examples/`` and
  ``proto/`` (as links): as a user runs them from the clone.

Expected output matches when its text matches, whitespace runs aside; numbers
match to a relative 1e-5 (float32 results may differ in the last bit between
CPUs); ``...`` matches anything.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.markdown import Example, fenced_blocks, markdown_examples, output_matches, report, run_python_example
from support.servers import ServedProcess
from support.tools import tool_env

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
README_ADDRESS = "127.0.0.1:50051"

TRAINING_DOC = REPO / "docs" / "training.md"
EXAMPLES = markdown_examples(README.read_text(encoding="utf-8"))
#: The raw TrainJob stream and the generated-stub example live in docs/training.md, run the same way.
ALL_EXAMPLES = EXAMPLES + markdown_examples(TRAINING_DOC.read_text(encoding="utf-8"), "docs/training.md")


def _section(markdown: str, heading: str, next_heading: str) -> range:
    """The 1-based lines from ``heading`` up to ``next_heading``."""
    lines = markdown.splitlines()
    start = lines.index(heading)
    return range(start + 1, lines.index(next_heading, start) + 1)


#: The README's lines about the token-protected image: their console examples run against a token server.
TOKEN_SECTION = _section(README.read_text(encoding="utf-8"), "## Deployment", "### Beyond loopback: a token or mutual TLS")
#: The token of that server (``$TOKEN`` in the examples).
TOKEN = "readme-token-" + "0123456789abcdef"


def _needs_token(ex: Example) -> bool:
    return ex.source == "README.md" and ex.line in TOKEN_SECTION


def _clone_like(tmp_path: Path) -> Path:
    """An empty working folder with the clone's examples/ and proto/, as the docs assume."""
    for name in ("examples", "proto"):
        (tmp_path / name).symlink_to(REPO / name, target_is_directory=True)
    return tmp_path


def _id(ex: Example) -> str:
    return ex.id if ex.source == "README.md" else f"{ex.source}:{ex.id}"


@pytest.mark.parametrize("ex", [e for e in ALL_EXAMPLES if e.kind == "python"], ids=_id)
def test_python_example(ex: Example, served_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    run_python_example(ex, _clone_like(tmp_path), tool_env(LOSSD_TARGET=served_process.address))


def _run_console(ex: Example, address: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a console example against ``address`` from an environment without a token."""
    argv = shlex.split(ex.code.replace(README_ADDRESS, address).replace("$TOKEN", TOKEN))
    assert argv[0] in ("lossd", "grpcurl"), f"{ex.source}:{ex.line}: only lossd and grpcurl commands are run"
    env = {k: v for k, v in tool_env(LOSSD_TARGET=address).items() if k not in ("LOSSD_TOKEN", "LOSSD_TOKEN_FILE")}
    return subprocess.run(argv, cwd=_clone_like(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=120)


def _check_console(ex: Example, proc: subprocess.CompletedProcess[str]) -> None:
    expected = ex.expected or ""
    assert proc.returncode == (1 if expected.startswith(("error:", "ERROR:")) else 0), report(ex, proc)
    assert output_matches(expected, proc.stdout), report(ex, proc)


@pytest.mark.parametrize("ex", [e for e in ALL_EXAMPLES if e.kind == "console" and not _needs_token(e)], ids=_id)
def test_console_example(ex: Example, served_process, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _check_console(ex, _run_console(ex, served_process.address, tmp_path))


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    """A server that wants a token, as the image does (``LOSSD_TOKEN``)."""
    with ServedProcess.start(tmp_path_factory.mktemp("token-server"), "--plugins", "none",
                             env={"LOSSD_TOKEN": TOKEN}) as served:
        yield served


@pytest.mark.parametrize("ex", [e for e in EXAMPLES if e.kind == "console" and _needs_token(e)], ids=_id)
def test_console_example_against_a_token_server(ex: Example, token_server: ServedProcess, tmp_path: Path) -> None:
    _check_console(ex, _run_console(ex, token_server.address, tmp_path))


def test_the_token_servers_health_check_is_shown_as_it_works(token_server: ServedProcess, tmp_path: Path) -> None:
    """The Deployment section shows health checks of the token-protected image: `lossd health` and grpcurl,
    each without the call's token. A plain `grpcurl ... Health/Check` (shown there before) fails: grpcurl asks
    reflection first, and reflection wants the token."""
    shown = [e.code for e in EXAMPLES if e.kind == "console" and _needs_token(e)]
    assert "lossd health" in shown
    assert any(c.startswith("grpcurl ") and c.endswith(" grpc.health.v1.Health/Check") for c in shown), shown
    plain = Example("console", f"grpcurl -plaintext {README_ADDRESS} grpc.health.v1.Health/Check", "", 0)
    proc = _run_console(plain, token_server.address, tmp_path)
    assert proc.returncode != 0 and "Unauthenticated" in proc.stdout, proc.stdout
    assert plain.code not in shown


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


def test_readme_make_and_pip_commands_name_what_exists() -> None:
    """The commands the tests do not run as written (```bash blocks, inline `make X`) name real
    things: every `make X` a Makefile target, every `pip install '.[extras]'` pyproject's extras,
    and no `pip install lossd` (lossd is not on PyPI)."""
    import tomllib  # Python 3.11+

    text = README.read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    commands = [line.split("  #")[0].strip() for b in fenced_blocks(text) if b.lang == "bash"
                for line in b.text.splitlines()]
    makes = {c.split()[1] for c in commands if c.startswith("make ")} | set(re.findall(r"`make ([a-z-]+)", text))
    assert {"run", "test", "check", "dist"} <= makes
    assert makes <= targets, f"README names make targets the Makefile lacks: {sorted(makes - targets)}"
    named = {e for group in re.findall(r"pip install '\.\[([a-z,]+)\]'", text) for e in group.split(",")}
    assert {"server", "plot", "progress", "metrics"} <= named
    assert named <= extras, f"README names extras pyproject lacks: {sorted(named - extras)}"
    assert not re.search(r"pip install '?lossd", text), "lossd is not on PyPI: install from the clone"


def test_configuration_table_covers_every_serve_flag_and_env_var() -> None:
    from lossd.server._config import build_parser

    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Configuration"):]
    section = section[: section.index("\n## ", 1)]
    flags = [s for a in build_parser()._actions for s in a.option_strings if s not in ("-h", "--help")]
    assert flags
    for flag in flags:
        assert f"`{flag}`" in section, f"README's Configuration section misses `lossd serve {flag}`"
    source = (REPO / "server" / "_config.py").read_text(encoding="utf-8")
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
