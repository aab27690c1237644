"""The shape of the code itself: packages import each other without cycles, and no function is
longer than a reader can hold (80 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = (
    "api",
    "cli",
    "ingest",
    "models",
    "queries",
    "report",
    "study",
    "train",
    "warehouse",
)
MAX_LINES = 80


def _sources() -> dict[str, Path]:
    """Every module of the package by its dotted name."""
    files = [ROOT / "__init__.py", ROOT / "errors.py", ROOT / "arguments.py"]
    for folder in PACKAGE_DIRS:
        files += sorted((ROOT / folder).rglob("*.py"))
    modules = {}
    for path in files:
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        modules[".".join(("actwh", *parts))] = path
    return modules


def _runtime_imports(tree: ast.Module) -> list[str]:
    """What a module imports when it runs — at the top or inside a function — leaving out
    ``if TYPE_CHECKING:`` blocks, which only type checkers read."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _sources()
    graph = {}
    for name, path in modules.items():
        imported = _runtime_imports(ast.parse(path.read_text()))
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, the first repeated at the end), or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep, [*path, dep])):
                return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    """The check itself can fail: a planted cycle is found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# Who may import whom, the arrows of docs/design.md: the library (the Warehouse API and the
# layers under it) never imports what sits on top of it — the report, the study, the CLI; the
# report never imports the study or the CLI; the study never imports the CLI; and the storage
# layers (warehouse, queries, models) never import the layers that drive models or the API.
LIBRARY = (
    "actwh.api",
    "actwh.ingest",
    "actwh.train",
    "actwh.warehouse",
    "actwh.queries",
    "actwh.models",
    "actwh.arguments",
    "actwh.errors",
)
NEVER = {
    LIBRARY: ("actwh.cli", "actwh.report", "actwh.study", "actwh.serve"),
    ("actwh.report",): ("actwh.study", "actwh.cli", "actwh.serve"),
    ("actwh.study",): ("actwh.cli", "actwh.serve"),
    ("actwh.serve",): ("actwh.cli",),
    ("actwh.warehouse", "actwh.queries", "actwh.models"): (
        "actwh.api",
        "actwh.ingest",
        "actwh.train",
    ),
}


def layering_breaks(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes against an arrow: ``"importer -> imported"``."""
    found = []
    for importers, forbidden in NEVER.items():
        for name, deps in graph.items():
            if _within(name, importers):
                found += [f"{name} -> {d}" for d in sorted(deps) if _within(d, forbidden)]
    return found


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_layers_hold():
    breaks = layering_breaks(import_graph())
    assert not breaks, "imports against the layering: " + "; ".join(breaks)


def test_the_layering_check_finds_a_break():
    """The check itself can fail: the library importing the report, the report the study."""
    assert layering_breaks({"actwh.api.warehouse": {"actwh.report.build"}}) == [
        "actwh.api.warehouse -> actwh.report.build"
    ]
    assert layering_breaks({"actwh.report.build": {"actwh.study.findings"}})
    assert not layering_breaks({"actwh.study.demo": {"actwh.report", "actwh.api.warehouse"}})


def test_design_md_draws_the_arrows_the_test_enforces():
    """docs/design.md states each rule of NEVER in its layering paragraph."""
    text = " ".join((ROOT / "docs" / "design.md").read_text().split())
    for importers, forbidden in NEVER.items():
        for a in importers:
            for b in forbidden:
                short = lambda m: m.removeprefix("actwh.")  # noqa: E731
                assert f"{short(a)} ↛ {short(b)}" in text, f"design.md: no arrow {a} ↛ {b}"


def test_no_function_over_80_lines():
    long = []
    for name, path in _sources().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, "functions over 80 lines: " + "; ".join(long)
