"""The layering of docs/architecture.md, checked on the code's own imports: who may import whom, no cycles.

The system under test (nodes/) knows nothing of the toolkit; the toolkit
reaches the nodes only through the bridge adapter and the stack's list of
what to start. Every other package imports only the layers below it.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nodes", "rundir", "stack", "chaos", "analysis", "harness", "adapters", "locustfiles")

# package -> the packages of ours it may import (besides itself)
MAY_IMPORT: dict[str, set[str]] = {
    "nodes": set(),
    "rundir": set(),
    "analysis": {"rundir"},
    "stack": {"rundir", "nodes"},
    "chaos": {"rundir", "stack"},
    "harness": {"rundir", "stack", "chaos", "analysis"},
    "adapters": {"harness", "rundir", "nodes"},
    "locustfiles": {"harness", "adapters"},
}
# the only files that may import the system under test
NODES_IMPORTERS = {"stack/system.py", "adapters/bridge/adapter.py"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ours the file imports, anywhere in it (function-level imports count too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def test_each_package_imports_only_the_layers_below_it():
    wrong = []
    known = modules()
    for name, deps in graph().items():
        package = name.split(".")[0]
        for dep in deps:
            other = dep.split(".")[0]
            if other != package and other not in MAY_IMPORT[package]:
                wrong.append(f"{name} imports {dep}")
            rel = known[name].relative_to(ROOT).as_posix()
            if other == "nodes" and package != "nodes" and rel not in NODES_IMPORTERS:
                wrong.append(f"{rel} imports {dep} (only {sorted(NODES_IMPORTERS)} may)")
    assert not wrong, "\n".join(sorted(wrong))


def cycles_of(g: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
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

    for v in g:
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    assert cycles_of({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_file_imports_itself_through_others():
    cycles = cycles_of(graph())
    assert not cycles, cycles
