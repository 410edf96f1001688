"""No import cycles among the project's modules, counting every `import` statement wherever it
stands: at the top, inside functions (the lazy imports that keep torch out of the analysis)
and under TYPE_CHECKING. A function-level import hides a cycle from Python until the function
runs; this test walks the source instead, so it finds those too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sweep", "analysis", "toysweep", "hydra_plugins")

pytestmark = pytest.mark.unit


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(path)] = path
    return out


def imports_of(name: str, is_package: bool, source: str, known: set[str]) -> set[str]:
    """The project modules that module `name` imports anywhere in its source."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, name)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod when there is one
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            # the longest known module that t names (a.b.c -> a.b when c is an attribute)
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # A package's __init__ importing its own submodules is how a package is built, not a
    # cycle: leave out edges from a package to the modules inside it.
    return {
        name: {
            t
            for t in imports_of(name, path.name == "__init__.py", path.read_text(), known)
            if not t.startswith(f"{name}.")
        }
        for name, path in mods.items()
    }


def test_no_import_cycles_even_through_function_level_imports():
    assert cycles(graph()) == []


def test_the_walk_sees_function_level_imports_and_cycles():
    """The checker itself can fail: a cycle made only of imports inside functions."""
    src = {
        "p.a": "def f():\n    from p import b\n",
        "p.b": "def g():\n    import p.a\n",
        "p.c": "from p.a import f\n",
    }
    known = set(src)
    g = {name: imports_of(name, False, text, known) for name, text in src.items()}
    assert g["p.c"] == {"p.a"}
    assert cycles(g) == [["p.a", "p.b"]]
