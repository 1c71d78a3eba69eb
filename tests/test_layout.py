"""The layout stays honest: import direction, no cycles between project modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "strategies", "models", "broker", "storage")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Project modules imported at module level (imports inside functions are lazy, by design).

    ``from pkg import sub`` where ``pkg.sub`` is a module is an edge to ``pkg.sub`` only.
    """
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            out.update(subs)
            if len(subs) < len(node.names):
                out.add(node.module)
    return {m for m in out if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "migrations" not in p.parts]
    names = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        graph[name] = {m for m in _imports(path, set(names)) if m in names and m != name}
    return graph


def test_models_import_no_broker_storage_or_engine() -> None:
    for mod, deps in _graph().items():
        if mod.startswith("models"):
            bad = {d for d in deps if d.split(".")[0] in ("broker", "storage")
                   or d.startswith(("bot.engine", "bot.app", "bot.cli"))}
            assert not bad, f"{mod} imports {bad}"


def test_strategies_never_import_a_broker_or_storage() -> None:
    # Nor the report: a spec names its report section by import path, so no strategy pulls in plotting.
    for mod, deps in _graph().items():
        if mod.startswith("strategies"):
            bad = {d for d in deps if d.split(".")[0] in ("broker", "storage")
                   or d.startswith(("bot.engine", "bot.app", "bot.cli", "bot.report"))}
            assert not bad, f"{mod} imports {bad}"


def test_domain_is_a_leaf() -> None:
    assert _graph()["bot.domain"] == set()


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in graph.get(n, ()):
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
