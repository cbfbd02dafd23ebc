"""The README's quick start, run as written: the own-model snippet through `optiserve optimize`.

Its client snippet runs against a real server in tests/e2e/test_tritonclient.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.docs.snippets import ROOT, python_snippet


def test_the_own_model_snippet_optimizes_from_the_current_directory(tmp_path):
    (tmp_path / "my_model.py").write_text(python_snippet("README.md", "# my_model.py"))
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # as a user's shell
    optiserve = Path(sys.executable).with_name("optiserve")
    finished = subprocess.run([str(optiserve), "optimize", "my_model:source", "--out", "artifacts/mine"],
                              cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    artifact = tmp_path / "artifacts" / "mine"
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["name"] == "mine" and (artifact / "model.onnx").is_file()
    assert (artifact / "report.md").read_text().count("int8_dynamic") >= 1


def test_the_readme_stays_an_overview():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 180, "guides belong in docs/, not the README"
