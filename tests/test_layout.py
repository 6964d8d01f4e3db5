"""The source tree stays readable: no import cycles, no oversized modules, every module importable alone.

The import graph is read statically from every module's source (module-level AND function-level imports,
since a lazy import inside a function still ties two modules together); imports under
``if TYPE_CHECKING:`` never run and are left out. Each module is then imported in a fresh interpreter
state (all ``batchlabel`` modules dropped from ``sys.modules`` first), which fails on an import-order cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "batchlabel"
MAX_LINES = 350


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str) -> str | None:
    """The batchlabel module that an import of ``name`` executes (the longest known prefix)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(path: Path) -> set[str]:
    """batchlabel modules imported anywhere in the file (outside TYPE_CHECKING blocks)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("batchlabel"):
                    found.add(_resolve(alias.name) or alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("batchlabel"):
            for alias in node.names:
                target = _resolve(f"{node.module}.{alias.name}")
                if target is not None and target != node.module and target.startswith(node.module + "."):
                    found.add(target)  # `from batchlabel.x import submodule`
                else:
                    found.add(_resolve(node.module) or node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def import_graph() -> dict[str, set[str]]:
    return {name: {t for t in imports_of(path) if t in MODULES and t != name} for name, path in MODULES.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                strongconnect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return cycles


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert sum(len(targets) for targets in graph.values()) > len(graph), "the graph reader found too few imports"
    assert find_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_is_oversized():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_every_module_imports_alone_in_a_fresh_state():
    """Each module imported first, with no other batchlabel module loaded (torch, vllm are not needed)."""
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {sorted(MODULES)!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'batchlabel' or m.startswith('batchlabel.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as err:\n"
        "        failed.append(f'{name}: {type(err).__name__}: {err}')\n"
        "heavy = sorted(m for m in ('torch', 'vllm', 'ray', 'transformers', 'peft') if m in sys.modules)\n"
        "print('FAILED', failed)\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("FAILED", "HEAVY")))
    assert lines["FAILED"] == "[]"
    # heavy libraries are imported inside the actor or command that needs them, never at module level
    assert lines["HEAVY"] == "[]", f"modules import heavy libraries at import time: {lines['HEAVY']}"


@pytest.mark.parametrize("package", sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()))
def test_every_package_says_what_it_is_for(package):
    assert ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())), f"{package}/__init__.py has no docstring"
