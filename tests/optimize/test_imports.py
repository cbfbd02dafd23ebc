"""optimize/'s modules import each other without a cycle, and never import serve (read from the source with ast)."""

from __future__ import annotations

import ast
from pathlib import Path

import optimize

PACKAGE_DIR = Path(optimize.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement anywhere in the file (top level or inside a function) may
    bind: `from a import b` counts as both a and a.b, since b may be a module."""
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package, one level up per extra dot
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """optimize module -> the optimize modules it imports (the package itself, which imports nothing, left out)."""
    imports = {module_name(path): imported_names(path) for path in PACKAGE_DIR.rglob("*.py")}
    return {name: {dep for dep in deps if dep in imports and dep not in (name, "optimize")}
            for name, deps in imports.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None when the graph is acyclic (depth-first, three colours)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_names_a_cycle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    assert "optimize.tensorrt_build" in graph["optimize.classifier"]  # imported inside Classifier.finish
    assert "optimize.demos.sentences" in graph["optimize.demos.minilm"]


def test_optimize_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle in optimize/: {' -> '.join(cycle)}"


def test_optimize_never_imports_serve():
    serving = {module_name(path): sorted(name for name in imported_names(path) if name.split(".")[0] == "serve")
               for path in PACKAGE_DIR.rglob("*.py")}
    assert {module: names for module, names in serving.items() if names} == {}
