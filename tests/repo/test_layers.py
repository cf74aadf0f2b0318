"""The dependency rule of docs/design.md, read from the source (``ast``; nothing is imported).

- no import cycle among lossd's own modules, imports inside functions counted;
- inside ``lossd.server`` every import points down :data:`SERVER_LAYERS` (nothing upward,
  nothing sideways between two parts of one rank);
- the evaluation layer imports neither grpc nor protobuf;
- the modules shared with the SDK (``lossd._wire``, ``_settings``, ...) import nothing of the
  server or the SDK;
- an import inside a function is one of :data:`FUNCTION_LEVEL_IMPORTS`, each for an optional
  or platform-specific dependency (a new one is a decision: add it there and to
  docs/design.md, "The dependency rule", with its reason).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.lint import REPO, _package_dirs

#: The parts of ``lossd.server`` by rank: a part may import only parts of a lower rank.
SERVER_LAYERS: dict[str, int] = {
    "_limits": 0,
    "losses": 1, "_security": 1, "_logging": 1, "_metrics": 1, "_openmp": 1,
    "evaluation": 2, "_connections": 2,
    "rpc": 3,
    "training": 4, "interceptors": 4,
    "_config": 5,
    "_app": 6,
    "__init__": 7, "__main__": 7,
}

#: (module, what it imports) inside a function, and why that is not at the top.
FUNCTION_LEVEL_IMPORTS: dict[tuple[str, str], str] = {
    ("lossd", "lossd.client"): "lazy re-export of the SDK (`lossd.Client`)",
    ("lossd.console", "lossd.client.cli"): "`lossd serve` sets gRPC's log verbosity before the SDK imports gRPC",
    ("lossd._model", "torch"): "the SDK has no torch unless it builds a model",
    ("lossd.client._training", "torch"): "TrainResult.state_dict: torch only when asked for tensors",
    ("lossd.client._training", "lossd.client._plot"): "matplotlib (the plot extra) only when plotting",
    ("lossd.client._plot", "matplotlib.figure"): "the plot extra",
    ("lossd.client.cli", "lossd.client._plot"): "the plot extra",
    ("lossd.client.cli", "lossd.server._app"): "`lossd serve` needs the server extra",
    ("lossd.client.cli", "lossd.server._config"): "`lossd serve` reads its flags before the server (torch) loads",
    ("lossd.client.cli", "lossd.server._openmp"): "`lossd serve` sets OpenMP's wait policy before torch loads",
    ("lossd.client.cli", "lossd.server._logging"): "`lossd serve` defers a Ctrl-C while the server loads",
    ("lossd.server._metrics", "prometheus_client"): "the metrics extra",
    ("lossd.server.training._manager", "fcntl"): "Linux-only",
    ("lossd.server._connections", "resource"): "Unix-only (the open-files limit)",
    ("lossd.server.training._manager", "torch.distributed"): "the store of a multi-machine job only",
    ("lossd.server.training._distributed", "ctypes"): "Linux-only",
    ("lossd.server.training._pgstore", "psycopg"): "the postgres extra, only for a postgresql:// job store",
    ("lossd.server.training._pgstore", "psycopg_pool"): "the postgres extra, only for a postgresql:// job store",
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (``from m import name``: ``m.name`` when that is a module)
    line: int
    in_function: bool


def _modules() -> dict[str, tuple[Path, bool]]:
    """lossd's own modules (generated ``lossd.v1`` left out): import name -> (file, is package)."""
    mapping = _package_dirs()
    mods: dict[str, tuple[Path, bool]] = {}
    for name, folder in mapping.items():
        root = REPO / folder
        mapped_below = {Path(f).relative_to(folder) for n, f in mapping.items() if n.startswith(name + ".")
                        and Path(f).is_relative_to(folder)}
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if rel.parts[0] == "v1" or any(rel.is_relative_to(m) for m in mapped_below):
                continue
            parts = list(rel.with_suffix("").parts)
            ispkg = parts[-1] == "__init__"
            mods[".".join([name, *(parts[:-1] if ispkg else parts)])] = (path, ispkg)
    return mods


MODULES = _modules()


def _imports(module: str, path: Path, ispkg: bool) -> Iterator[Import]:
    def visit(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(module, alias.name, child.lineno, in_function)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = module if ispkg else module.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{child.module}" if child.module else package
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    yield Import(module, full if full in MODULES else base, child.lineno, in_function)
            else:
                nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                yield from visit(child, nested)

    yield from visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)


IMPORTS = [i for name, (path, ispkg) in MODULES.items() for i in _imports(name, path, ispkg)]


def _where(i: Import) -> str:
    return f"{MODULES[i.source][0].relative_to(REPO)}:{i.line}: {i.source} imports {i.target}"


def _server_part(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["lossd", "server"]:
        return None
    return parts[2] if len(parts) > 2 else "__init__"


def test_the_walk_sees_the_whole_package() -> None:
    # Guards the checks below against reading nothing: every layer and a few known modules are there.
    parts = {_server_part(m) for m in MODULES} - {None}
    assert parts == set(SERVER_LAYERS), f"server parts without a rank in SERVER_LAYERS: {parts ^ set(SERVER_LAYERS)}"
    assert {"lossd._wire", "lossd.client.cli", "lossd.server.rpc._request", "lossd.server.losses._registry"} <= set(
        MODULES
    )
    request = [i.target for i in IMPORTS if i.source == "lossd.server.rpc._request"]
    assert any(t.startswith("lossd.server.evaluation") for t in request), request


def test_no_import_cycle() -> None:
    # A module's own parent packages are imported before it whatever it says (``from .. import
    # __version__`` reads an attribute of a package already running): not an edge of a cycle.
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in IMPORTS:
        if i.target in MODULES and not (i.source + ".").startswith(i.target + "."):
            graph[i.source].add(i.target)
    # Tarjan's strongly connected components; any of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_server_imports_point_down_the_layers() -> None:
    upward = []
    for i in IMPORTS:
        source, target = _server_part(i.source), _server_part(i.target)
        if source is None or target is None or source == target:
            continue
        if SERVER_LAYERS[target] >= SERVER_LAYERS[source]:
            ranks = f"{source}: rank {SERVER_LAYERS[source]}, {target}: rank {SERVER_LAYERS[target]}"
            upward.append(f"{_where(i)} ({ranks})")
    assert not upward, "imports up (or across) the server's layers:\n" + "\n".join(upward)


def test_evaluation_imports_neither_grpc_nor_protobuf() -> None:
    found = [_where(i) for i in IMPORTS if i.source.startswith("lossd.server.evaluation")
             and (i.target.split(".")[0] in ("grpc", "google") or i.target.startswith("lossd.v1"))]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("shared", sorted(m for m in MODULES if m.count(".") == 1 and m.split(".")[1].startswith("_")))
def test_shared_modules_import_nothing_of_server_or_sdk(shared: str) -> None:
    found = [_where(i) for i in IMPORTS if i.source == shared
             and (i.target.startswith("lossd.server") or i.target.startswith("lossd.client"))]
    assert not found, "\n".join(found)


def test_function_level_imports_are_listed() -> None:
    found = [_where(i) for i in IMPORTS if i.in_function and (i.source, i.target) not in FUNCTION_LEVEL_IMPORTS]
    assert not found, (
        "imports inside functions (move them to the top, or list them in FUNCTION_LEVEL_IMPORTS and "
        "docs/design.md with the reason):\n" + "\n".join(found)
    )
