"""The shape of the package: its import graph and the size of its functions.

The graph is read from the source (every ``import`` and ``from ... import`` statement, those
inside functions included, since afxest defers heavy imports into the functions that need
them), so a circle or a forbidden edge fails here before anyone trips over it at run time.
A dynamic import (``importlib.import_module``, ``__import__``) would hide an edge from the
reader, so afxest has none.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "afxest"
MAX_FUNCTION_LINES = 150
# the modules of the training loops: inference never reaches them
TRAINING = {"afxest.train", "afxest.train_proxy", "afxest.runs"}
INFERENCE = {"afxest.estimate", "afxest.evaluate", "afxest.render", "afxest.engines", "afxest.store",
             "afxest.search", "afxest.figures", "afxest.scoring", "afxest.propose", "afxest.tables",
             "afxest.nn.proxy"}  # nn.proxy: the proxy model, not its training
# the top-level command modules of inference
INFERENCE_COMMANDS = {"afxest.estimate", "afxest.evaluate", "afxest.search", "afxest.store", "afxest.render",
                      "afxest.figures", "afxest.tables"}
# modules both sides use: they reach neither side's command modules
SHARED = {"afxest.checkpoints", "afxest.objective", "afxest.device"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The afxest modules ``name`` imports anywhere in its source: ``import a.b``, ``from a
    import b`` (b a module or a name in a), relative imports resolved against the package."""
    package = name if (PACKAGE / Path(*name.split(".")[1:]) / "__init__.py").exists() else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import afxest.dsp.filters` names afxest.dsp too
                target = target.rpartition(".")[0]
            if target and target != name and target != "afxest":
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    trees = modules()
    known = set(trees)
    return {name: imported(name, tree, known) for name, tree in trees.items()}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for nxt in graph.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def test_import_graph_is_read_from_source():
    graph = import_graph()
    # edges known to exist, one module-level and one inside a function: the reader sees both
    assert "afxest.catalogue" in graph["afxest.presets"]
    assert "afxest.dsp.compressor" in reachable(graph, "afxest.engines")


def test_no_import_circle():
    graph = import_graph()
    circles = sorted(f"{a} -> ... -> {a}" for a in graph if a in reachable(graph, a))
    assert not circles, "import circles:\n" + "\n".join(circles)


@pytest.mark.parametrize("module", sorted(INFERENCE))
def test_inference_does_not_reach_the_training_loops(module):
    graph = import_graph()
    assert module in graph
    assert not reachable(graph, module) & TRAINING, sorted(reachable(graph, module) & TRAINING)


@pytest.mark.parametrize("module", sorted(SHARED))
def test_shared_modules_reach_neither_side(module):
    graph = import_graph()
    assert module in graph
    commands = TRAINING | INFERENCE_COMMANDS
    assert not reachable(graph, module) & commands, sorted(reachable(graph, module) & commands)


def dynamic_imports(tree: ast.Module) -> list[int]:
    """The lines of ``tree`` that name ``import_module`` or ``__import__`` (a call, or a
    reference that could become one)."""
    names = {"import_module", "__import__"}
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if (isinstance(node, ast.Name) and node.id in names)
        or (isinstance(node, ast.Attribute) and node.attr in names)
        or (isinstance(node, ast.alias) and node.name in names)
    )


def test_dynamic_imports_are_seen():
    tree = ast.parse("import importlib\nfrom importlib import import_module\nimportlib.import_module('afxest.train')\n"
                     "__import__('afxest.train')\n")
    assert dynamic_imports(tree) == [2, 3, 4]


def test_no_dynamic_import():
    found = [f"{name}:{line}" for name, tree in modules().items() for line in dynamic_imports(tree)]
    assert not found, f"dynamic imports hide edges from the import graph: {found}"


def test_no_function_is_longer_than_the_limit():
    long = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long
