"""The package's import graph has no cycle, and no import inside a function hides one.

Every module of ``robin_plugin`` is parsed (not imported) with :mod:`ast`; each ``import`` and
``from ... import`` of a ``robin_plugin`` module, at module level or inside a function, is an
edge of the graph. The rule for where an edge points:

- ``from A import b`` points at the module ``A.b`` when that is a module, else at ``A`` (a name
  defined in ``A``, or re-exported by the package ``A/__init__.py``);
- ``import A.B`` points at ``A.B``.

The import of a module's parent packages that Python performs implicitly (``A/__init__.py`` runs
before ``A.b``) is not an edge: a package ``__init__`` that re-exports its submodules is then no
cycle with them. An import that really names the package's ``__init__`` from one of the modules
that ``__init__`` imports (``from . import name_defined_in_init``) is an edge, and a cycle: that
module can only see what ``__init__`` defined before importing it.

A cycle hidden from Python's import machinery is still a cycle of the design, so every way of
naming a module is an edge: an import inside a function (``def f(): from ..export import x``), an
import under ``if TYPE_CHECKING:`` (it never runs, but the module still depends on the other's
types), and ``importlib.import_module("robin_plugin....")`` / ``__import__(...)`` with a literal
name. Function-level imports that remain are listed in :data:`LAZY_IMPORTS` with their reason (an
optional or slow dependency, a sub-command loaded when it runs); a new one must be added there
with its reason, or moved to the top of its module.
"""
from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import robin_plugin

PACKAGE = "robin_plugin"
ROOT = Path(robin_plugin.__file__).resolve().parent

#: Import edges that may close a cycle: ``(importer, imported) -> reason``; the edge is ignored by
#: :func:`test_no_import_cycles`. Empty: the package has no cycle
#: (``test_no_import_cycles_at_all``), and an entry whose import is gone fails
#: ``test_allowed_cycle_edges_still_exist``.
ALLOWED_CYCLE_EDGES: dict[tuple[str, str], str] = {}

#: Function-level imports of robin_plugin modules, ``(importer, imported) -> reason``. Anything
#: else belongs at the top of its module, so that a new hiding import anywhere fails this test.
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    ("robin_plugin.cli.inspect", "robin_plugin.viz"): "matplotlib takes a second to import; only `robin inspect` needs it",
}


# --- the graph ---------------------------------------------------------------------------------


def package_modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package ``__init__``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _absolute(module: str, is_pkg: bool, level: int, name: str | None) -> str:
    """The absolute module name of ``from <level dots><name> import ...`` written in ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_edges(modules: Mapping[str, tuple[Path, bool]]) -> list[tuple[str, str, bool, int]]:
    """``(importer, imported, in_function, line)`` for every import of a package module."""
    edges = []
    for module, (path, is_pkg) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function in _imports(tree):
            if isinstance(node, ast.ImportFrom):
                base = _absolute(module, is_pkg, node.level, node.module)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            elif isinstance(node, ast.Call):
                targets = [node.args[0].value]
            else:
                targets = [a.name for a in node.names]
            for target in dict.fromkeys(targets):  # one edge per statement and module
                if target in modules and target != module:
                    edges.append((module, target, in_function, node.lineno))
    return edges


def _is_dynamic_import(node: ast.AST) -> bool:
    """``importlib.import_module("a.b")``, ``import_module("a.b")`` or ``__import__("a.b")`` with a literal name."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return False
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr == "import_module") or (
        isinstance(f, ast.Name) and f.id in ("import_module", "__import__"))


def _imports(tree: ast.AST) -> Iterable[tuple[ast.Import | ast.ImportFrom | ast.Call, bool]]:
    """Every import (also under ``if TYPE_CHECKING:`` and dynamic ones) with whether it sits inside a function."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)) or _is_dynamic_import(child):
                yield child, in_function
            stack.append((child, inside))


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (or a self-loop), each sorted.

    Tarjan's algorithm, iterative. A graph without cycles gives ``[]``.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    nodes = set(graph) | {m for targets in graph.values() for m in targets}
    counter = 0
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    out.append(sorted(component))
    return sorted(out)


def _graph(edges: Iterable[tuple[str, str, bool, int]], skip: Iterable[tuple[str, str]] = ()) -> dict[str, set[str]]:
    skipped = set(skip)
    graph: dict[str, set[str]] = {}
    for a, b, _, _ in edges:
        if (a, b) not in skipped:
            graph.setdefault(a, set()).add(b)
    return graph


def _describe(cycles: list[list[str]], edges: list[tuple[str, str, bool, int]]) -> str:
    lines = []
    for component in cycles:
        members = set(component)
        lines.append("cycle: " + ", ".join(component))
        for a, b, in_function, line in edges:
            if a in members and b in members:
                lines.append(f"  {a}:{line} imports {b}" + (" (inside a function)" if in_function else ""))
    return "\n".join(lines)


@pytest.fixture(scope="module")
def edges() -> list[tuple[str, str, bool, int]]:
    return import_edges(package_modules())


# --- the finder itself can fail ------------------------------------------------------------------


def test_cycle_finder_on_synthetic_graphs() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"a"}}) == [["a"]]
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c", "e"}}) == [["a", "b"], ["c", "d"]]
    # a long chain is handled without recursion
    chain = {f"m{i}": {f"m{i + 1}"} for i in range(5000)}
    assert find_cycles(chain) == []
    chain["m5000"] = {"m0"}
    assert len(find_cycles(chain)[0]) == 5001


def test_edge_rule_on_a_synthetic_package(tmp_path: Path) -> None:
    """Submodule imports point at the submodule; names from a package point at its __init__; no import hides."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\nfrom . import b\n")
    (pkg / "a.py").write_text("from .sub import helper\n\ndef f():\n    from . import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\n\nfrom . import a\n\nif TYPE_CHECKING:\n    from .sub import c\n    from . import e\n")
    (pkg / "e.py").write_text("import importlib\n\ndef load():\n    return importlib.import_module('pkg.b')\n")
    (pkg / "sub" / "__init__.py").write_text("from .c import helper\n")
    (pkg / "sub" / "c.py").write_text("from .. import f\n")  # a name of pkg/__init__: a real cycle
    edges = import_edges(package_modules(pkg, "pkg"))
    assert {(a, b, fn) for a, b, fn, _ in edges} == {
        ("pkg", "pkg.a", False), ("pkg", "pkg.b", False),  # the __init__ re-exports
        ("pkg.a", "pkg.sub", False), ("pkg.a", "pkg.b", True), ("pkg.b", "pkg.a", False),
        ("pkg.b", "pkg.sub.c", False), ("pkg.b", "pkg.e", False),  # under TYPE_CHECKING: edges all the same
        ("pkg.e", "pkg.b", True),  # importlib.import_module with a literal name
        ("pkg.sub", "pkg.sub.c", False), ("pkg.sub.c", "pkg", False),
    }
    hidden = [("pkg.a", "pkg.b"), ("pkg.e", "pkg.b"), ("pkg.sub.c", "pkg")]
    # an __init__ that re-exports its submodules is no cycle with them ...
    assert find_cycles(_graph(edges, hidden)) == []
    # ... an import hidden in a function is one ...
    assert find_cycles(_graph(edges, [e for e in hidden if e != ("pkg.a", "pkg.b")])) == [["pkg.a", "pkg.b"]]
    # ... so is one hidden under TYPE_CHECKING or in importlib.import_module ...
    assert find_cycles(_graph(edges, [e for e in hidden if e != ("pkg.e", "pkg.b")])) == [["pkg.b", "pkg.e"]]
    # ... and so is a submodule taking a name from the __init__ that (indirectly) imports it
    assert find_cycles(_graph(edges, [e for e in hidden if e != ("pkg.sub.c", "pkg")])) == [
        ["pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"]]


# --- the package ------------------------------------------------------------------------------------


def test_no_import_cycles(edges) -> None:
    cycles = find_cycles(_graph(edges, ALLOWED_CYCLE_EDGES))
    assert not cycles, "import cycles in robin_plugin:\n" + _describe(cycles, edges)


def test_allowed_cycle_edges_still_exist(edges) -> None:
    present = {(a, b) for a, b, _, _ in edges}
    stale = [e for e in ALLOWED_CYCLE_EDGES if e not in present]
    assert not stale, f"remove these entries from ALLOWED_CYCLE_EDGES, the imports are gone: {stale}"


def test_no_import_cycles_at_all(edges) -> None:
    cycles = find_cycles(_graph(edges))
    assert not cycles, _describe(cycles, edges)


def test_function_level_imports_are_listed_with_a_reason(edges) -> None:
    found = {(a, b) for a, b, in_function, _ in edges if in_function}
    unlisted = sorted(found - set(LAZY_IMPORTS))
    stale = sorted(set(LAZY_IMPORTS) - found)
    assert not unlisted, (
        "function-level imports of robin_plugin modules must be at the top of their module, or listed in "
        f"LAZY_IMPORTS with the reason they are lazy: {unlisted}"
    )
    assert not stale, f"remove these entries from LAZY_IMPORTS, the imports are gone: {stale}"


def test_models_never_import_export_training_or_eval(edges) -> None:
    """Layering: models/ (and what it builds on) never reaches up to export/, training/, eval/ or the CLI."""
    low = ("robin_plugin.models", "robin_plugin.layers", "robin_plugin.formats", "robin_plugin.pruning",
           "robin_plugin.summary", "robin_plugin.errors", "robin_plugin.io")
    high = ("robin_plugin.export", "robin_plugin.training", "robin_plugin.eval", "robin_plugin.cli",
            "robin_plugin.viz")
    bad = [(a, b, line) for a, b, _, line in edges
           if a.startswith(low) and (b == "robin_plugin" or b.startswith(high))]
    assert not bad, f"lower floors import higher ones: {bad}"


#: The floors of the package, lowest first (``docs/architecture.md``): a module imports only from its own
#: floor or lower ones. The command line (the ``cli`` package), :mod:`robin_plugin.loading` (which
#: reads every kind of model file) and the package ``__init__`` sit on the top floor.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("errors", "_checks", "io", "rng", "progress", "memory_format", "pgd"),
    ("layers", "data"),
    ("pruning", "summary"),
    ("formats",),
    ("models", "viz", "testing"),
    ("training", "export"),
    ("eval",),
    ("loading", "cli", ""),
)


def floor_of(module: str) -> int:
    """The floor of a package module: the longest :data:`FLOORS` entry it is, or lies under."""
    rel = module[len(PACKAGE) + 1:] if module != PACKAGE else ""
    best, floor = -1, None
    for level, names in enumerate(FLOORS):
        for name in names:
            if (rel == name or (name and rel.startswith(name + "."))) and len(name) > best:
                best, floor = len(name), level
    assert floor is not None, f"{module} is on no floor: add it to FLOORS (and to docs/architecture.md)"
    return floor


def test_floor_of_the_longest_match() -> None:
    assert floor_of("robin_plugin.cli.eval") == len(FLOORS) - 1 > floor_of("robin_plugin.eval.measure")
    assert floor_of("robin_plugin") == len(FLOORS) - 1 and floor_of("robin_plugin.errors") == 0
    with pytest.raises(AssertionError, match="no floor"):
        floor_of("robin_plugin.nowhere")


def test_imports_flow_down_the_floors(edges) -> None:
    """No module imports from a higher floor (models never import training, training never the CLI, ...)."""
    bad = [f"{a}:{line} (floor {floor_of(a)}) imports {b} (floor {floor_of(b)})"
           for a, b, _, line in edges if floor_of(b) > floor_of(a)]
    assert not bad, "imports going up the floors:\n" + "\n".join(bad)
