"""The package's layout: no import circle (function-local imports included), the config layer at the foot, and no
module past the size that says it holds more than one job."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llm_unlearn"
MAX_LINES = 500


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at the top or inside functions; imports under ``if
    TYPE_CHECKING:`` never run and are left out. ``from . import x`` of a submodule is an edge to the submodule."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text())
        skip = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_pkg else name.split(".")[:-1]
                    here = here[: len(here) - (node.level - 1)]
                    base = ".".join(here + ([node.module] if node.module else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                targets = subs + ([base] if len(subs) < len(node.names) else [])
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
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
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    graph = import_graph()
    assert len(graph) > 50 and "llm_unlearn.config" in graph["llm_unlearn.pipeline"]
    assert cycles(graph) == []


def test_config_layer_imports_nothing_of_ours_but_errors():
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("llm_unlearn.config"):
            outside = {d for d in deps if not d.startswith("llm_unlearn.config")} - {"llm_unlearn.errors"}
            assert not outside, (name, outside)


def test_no_module_over_the_size_limit():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


def floor(module: str) -> int:
    """0 the foot (config, errors), 1 the shared core, 2 WHP, 3 the methods, 4 what users drive."""
    if module.startswith("llm_unlearn.config") or module in ("llm_unlearn", "llm_unlearn.errors"):
        return 0
    if module.startswith("llm_unlearn.whp"):
        return 2
    if module.startswith("llm_unlearn.methods"):
        return 3
    top = ("pipeline", "preflight", "attacks", "tofu", "api", "cli", "commands", "__main__")
    return 4 if any(module.startswith(f"llm_unlearn.{name}") for name in top) else 1


# Imports that reach a higher floor, each for a reason: every method's evaluation scores the generic floor, which is
# built from WHP's anchor dictionary and translation (floor rule F7); the model card names the method and, for WHP,
# its anchors.
REACHING_UP = {
    ("llm_unlearn.evaluation.core", "llm_unlearn.whp.anchors"), ("llm_unlearn.evaluation.core", "llm_unlearn.whp.floor"),
    ("llm_unlearn.evaluation.core", "llm_unlearn.whp.translation"),
    ("llm_unlearn.evaluation.report", "llm_unlearn.whp.floor"),
    ("llm_unlearn.export", "llm_unlearn.methods"), ("llm_unlearn.export", "llm_unlearn.whp.anchors"),
}


def test_modules_import_from_their_floor_or_below():
    graph = import_graph()
    up = {(m, d) for m, deps in graph.items() for d in deps if floor(d) > floor(m)}
    assert up <= REACHING_UP, sorted(up - REACHING_UP)
