"""The layout stays honest: import direction, leaves, no cycles between project modules.

Every import counts, wherever it is written: module level, inside a function (a lazy import is
still a dependency), under ``if TYPE_CHECKING`` (the cycle check alone leaves those out: they
never run). ``lint-imports`` (pyproject.toml) checks the same direction rules, indirect imports
included; this file needs nothing but the AST.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "strategies", "models", "broker", "storage")
#: The shared vocabulary: each may import only the other leaves.
LEAVES = frozenset({"bot.domain", "bot.errors", "bot.timeutil", "bot.candles", "bot.bars", "bot.positions",
                    "bot.redact"})
#: Leaves that import nothing of the project at all.
PURE_LEAVES = frozenset({"bot.domain", "bot.errors"})
COMPOSITION = ("bot.engine", "bot.app", "bot.cli")

#: Import edges allowed to close a cycle, each a temporary debt with its reason (none today).
CYCLE_EXEMPT: frozenset[tuple[str, str]] = frozenset()


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST, type_checking: bool) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, at any depth; ``if TYPE_CHECKING:`` bodies only
    when ``type_checking`` (their ``else`` branch always)."""
    out: list[ast.Import | ast.ImportFrom] = []
    todo = [node]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.Import | ast.ImportFrom):
            out.append(n)
        elif not type_checking and _is_type_checking(n):
            todo.extend(n.orelse)  # type: ignore[attr-defined]
        else:
            todo.extend(ast.iter_child_nodes(n))
    return out


def _imports(path: Path, modules: set[str], name: str | None = None, type_checking: bool = True) -> set[str]:
    """Project modules ``path`` imports anywhere in its AST (module level, functions, classes).

    ``from pkg import sub`` where ``pkg.sub`` is a module is an edge to ``pkg.sub`` only;
    relative imports are resolved against ``name`` (the module's dotted name).
    """
    tree = ast.parse(path.read_text())
    name = name or _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in _import_nodes(tree, type_checking):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
            continue
        if node.level:
            base = package[: len(package) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        subs = {f"{module}.{a.name}" for a in node.names} & modules
        out.update(subs)
        if len(subs) < len(node.names):
            out.add(module)
    return {m for m in out if m.split(".")[0] in PACKAGES}


def _graph(type_checking: bool = True) -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "migrations" not in p.parts]
    names = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        deps = _imports(path, set(names), name, type_checking)
        graph[name] = {m for m in deps if m in names and m != name}
    return graph


def _violations(prefix: str, forbidden: tuple[str, ...]) -> dict[str, set[str]]:
    def bad(dep: str) -> bool:
        return any(dep == f or dep.startswith(f + ".") for f in forbidden)

    return {mod: hits for mod, deps in _graph().items()
            if (mod == prefix or mod.startswith(prefix + ".")) and (hits := {d for d in deps if bad(d)})}


def test_lazy_and_relative_imports_are_seen(tmp_path: Path) -> None:
    src = tmp_path / "mod.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import bot.engine\n"
        "def f():\n    from storage import journal\n"
        "class C:\n    def g(self):\n        from .sibling import x\n"
    )
    modules = {"storage.journal", "broker.sibling"}
    assert _imports(src, modules, "broker.mod") == {"bot.engine", "storage.journal", "broker.sibling"}
    assert _imports(src, modules, "broker.mod", type_checking=False) == {"storage.journal", "broker.sibling"}


def test_models_import_no_broker_storage_strategies_or_engine() -> None:
    assert _violations("models", ("broker", "storage", "strategies", *COMPOSITION)) == {}


def test_strategies_never_import_a_broker_or_storage() -> None:
    # Nor the report: a spec names its report section by import path, so no strategy pulls in plotting.
    assert _violations("strategies", ("broker", "storage", "bot.report", *COMPOSITION)) == {}


def test_brokers_never_import_storage_strategies_or_engine() -> None:
    assert _violations("broker", ("storage", "strategies", *COMPOSITION)) == {}


def test_storage_never_imports_a_broker_strategies_or_engine() -> None:
    assert _violations("storage", ("broker", "strategies", "bot.engine")) == {}


def test_domain_is_a_leaf() -> None:
    assert _graph()["bot.domain"] == set()


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaves_import_only_leaves(leaf: str) -> None:
    deps = _graph()[leaf]
    allowed = set() if leaf in PURE_LEAVES else LEAVES
    assert deps <= allowed, f"{leaf} imports {deps - allowed}"


def test_no_import_cycles() -> None:
    """Module-level and lazy imports both count; ``if TYPE_CHECKING:`` imports never run, so an
    annotation may name a type of a module that imports this one."""
    graph = {n: {m for m in deps if (n, m) not in CYCLE_EXEMPT}
             for n, deps in _graph(type_checking=False).items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_cycle_exemptions_are_still_needed() -> None:
    graph = _graph(type_checking=False)
    stale = {(a, b) for a, b in CYCLE_EXEMPT if b not in graph.get(a, ()) or a not in _reachable(graph, b)}
    assert not stale, f"these edges no longer close a cycle; delete them from CYCLE_EXEMPT: {stale}"


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        n = todo.pop()
        for m in graph.get(n, ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def test_the_api_only_reads_the_journal() -> None:
    """``bot serve`` answers from storage's queries: no journal writer, engine, runner or broker."""
    assert _violations("bot.api", ("storage.journal", "bot.engine", "bot.runner", "broker", *COMPOSITION)) == {}
