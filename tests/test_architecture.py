"""The shape of the package: its import graph and the size of its functions.

The graph is read from the source (every ``import`` and ``from ... import`` statement, those
inside functions included, since afxest defers heavy imports into the functions that need
them), so a circle or a forbidden edge fails here before anyone trips over it at run time.
A dynamic import (``importlib.import_module``, ``__import__``) would hide an edge from the
reader, so afxest has none.
"""

from __future__ import annotations

import ast
import dis
from collections.abc import Iterator
from pathlib import Path
from types import CodeType

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


def code_objects(code: CodeType) -> Iterator[CodeType]:
    """A compiled module and every function, class and comprehension inside it."""
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from code_objects(const)


def bytecode_graph() -> dict[str, set[str]]:
    """The import graph read a second way, independently of :func:`imported`'s walk of the
    syntax tree: from CPython's own compilation of each module, whose every import statement,
    wherever it sits, is an IMPORT_NAME instruction after its level and its from-list."""
    known = set(modules())
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for code in code_objects(compile(path.read_text(), str(path), "exec")):
            instructions = list(dis.get_instructions(code))
            for i, ins in enumerate(instructions):
                if ins.opname != "IMPORT_NAME":
                    continue
                level, fromlist = instructions[i - 2].argval, instructions[i - 1].argval
                base = ins.argval
                if level:
                    anchor = ".".join(package.split(".")[: len(package.split(".")) - level + 1])
                    base = f"{anchor}.{base}" if base else anchor
                # `from base import f`: the module base.f, or base when f is a name in it
                for target in [f"{base}.{f}" for f in fromlist] if fromlist else [base]:
                    while target and target not in known:
                        target = target.rpartition(".")[0]
                    if target and target not in (name, "afxest"):
                        found.add(target)
        graph[name] = found
    return graph


def test_import_graph_is_the_compilers():
    """The graph the other tests check is the one CPython compiles (every module, every edge,
    imports inside functions included), and it is not empty."""
    graph = import_graph()
    assert graph == bytecode_graph()
    assert sum(len(edges) for edges in graph.values()) > 50


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


def test_no_dynamic_import():
    found = [f"{name}:{line}" for name, tree in modules().items() for line in dynamic_imports(tree)]
    assert not found, f"dynamic imports hide edges from the import graph: {found}"
    # and as the compiler sees them: no code object of the package names either function
    named = [f"{module_name(path)}:{code.co_name}" for path in sorted(PACKAGE.rglob("*.py"))
             for code in code_objects(compile(path.read_text(), str(path), "exec"))
             if {"import_module", "__import__"} & set(code.co_names)]
    assert not named, f"dynamic imports hide edges from the import graph: {named}"


def test_no_function_is_longer_than_the_limit():
    long = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long
