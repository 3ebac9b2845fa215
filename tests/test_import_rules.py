"""The package boundaries of DESIGN.md and the absence of import cycles, checked on the source.

Every import statement counts, also those inside functions: a cycle hidden in a function
body is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("client", "server", "shared", "simulations")

FORBIDDEN = {
    # shared/ is pure code both sides import: no site I/O libraries, no client/server.
    "shared": {"fedmi.client", "fedmi.server", "fedmi.simulations", "pydicom"},
    # the coordinator never imports what runs inside a hospital.
    "server": {"fedmi.client", "fedmi.simulations", "pydicom"},
    "client": {"fedmi.server", "fedmi.simulations"},
}


def module_files() -> dict[str, Path]:
    """Installed module name (``fedmi.<folder>...``) → source file, for every module."""
    out = {}
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(["fedmi", *parts])] = path
    return out


def imported_names(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module ``path`` imports anywhere in its body (absolute names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import; write the absolute fedmi path"
            names.add(node.module)
            # `from fedmi.x import y` imports the module fedmi.x.y when there is one
            names.update(
                f"{node.module}.{a.name}"
                for a in node.names
                if f"{node.module}.{a.name}" in modules
            )
    return names


def import_graph() -> dict[str, set[str]]:
    """fedmi module → the fedmi modules it imports (importing a module runs its packages)."""
    modules = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for imported in imported_names(path, modules):
            parts = imported.split(".")
            for i in range(2, len(parts) + 1):  # the module and the packages above it
                prefix = ".".join(parts[:i])
                if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                    deps.add(prefix)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_boundary(package):
    modules = module_files()
    files = [p for n, p in modules.items() if n.split(".")[1] == package]
    assert files
    for path in files:
        bad = {
            imported
            for imported in imported_names(path, modules)
            for forbidden in FORBIDDEN[package]
            if imported == forbidden or imported.startswith(forbidden + ".")
        }
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_top_level_imports_of_the_folders():
    """Code imports fedmi.<folder>, never the bare folder name (which is not installed)."""
    modules = module_files()
    for path in [*modules.values(), *sorted((ROOT / "tests").rglob("*.py"))]:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                tops = {node.module.split(".")[0]}
            else:
                continue
            assert not tops & set(PACKAGES), f"{path.relative_to(ROOT)}: import {sorted(tops)}"
