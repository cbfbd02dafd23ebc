"""Manifest fields for GPU targets: round trip, defaults for older artifacts, TensorRT engine checks."""

from __future__ import annotations

import json
import shutil

import pytest

from optimize.manifest import (
    ArtifactError, TensorRTEngine, check_engine, engine_mismatch, load_verified, read_manifest, sha256_of,
    write_manifest,
)

H200 = ("10.13.0.35", "NVIDIA H200", "9.0")


def _engine(sha: str = "0" * 64) -> TensorRTEngine:
    version, gpu, capability = H200
    return TensorRTEngine(engine_sha256=sha, tensorrt_version=version, gpu_name=gpu, compute_capability=capability,
                          precisions=("fp16", "int8"), opt_batch=32, max_batch=32)


@pytest.fixture
def engine_artifact(digits_artifact, tmp_path):
    artifact = tmp_path / "with-engine"
    shutil.copytree(digits_artifact, artifact)
    (artifact / "model.engine").write_bytes(b"serialized engine bytes")
    manifest = read_manifest(artifact).model_copy(
        update={"target": "gpu", "tensorrt": _engine(sha256_of(artifact / "model.engine"))})
    write_manifest(manifest, artifact)
    return artifact


def test_gpu_fields_round_trip_through_json(engine_artifact, tmp_path):
    manifest = read_manifest(engine_artifact)
    assert manifest.target == "gpu" and manifest.tensorrt.compute_capability == "9.0"
    write_manifest(manifest, tmp_path)
    assert read_manifest(tmp_path) == manifest


def test_manifests_written_before_gpu_fields_load_as_cpu_artifacts(digits_artifact, tmp_path):
    document = json.loads((digits_artifact / "manifest.json").read_text())
    for field in ("target", "tensorrt"):
        document.pop(field, None)
    (tmp_path / "manifest.json").write_text(json.dumps(document))
    manifest = read_manifest(tmp_path)
    assert manifest.target == "cpu" and manifest.tensorrt is None


def test_engine_file_is_verified_like_the_model(engine_artifact):
    load_verified(engine_artifact)
    (engine_artifact / "model.engine").write_bytes(b"other bytes")
    with pytest.raises(ArtifactError, match="model.engine: sha256 mismatch"):
        load_verified(engine_artifact)


def test_engine_loads_where_it_was_built():
    assert engine_mismatch(_engine(), *H200) is None
    check_engine(_engine(), *H200)


@pytest.mark.parametrize("here, named", [
    (("10.9.0.34", "NVIDIA H200", "9.0"), "this machine has TensorRT 10.9.0.34 and NVIDIA H200"),
    (("10.13.0.35", "NVIDIA A100-SXM4-80GB", "8.0"), "NVIDIA A100-SXM4-80GB (compute capability 8.0)"),
])
def test_engine_for_another_gpu_or_tensorrt_version_is_refused_saying_both(here, named):
    with pytest.raises(ArtifactError) as refused:
        check_engine(_engine(), *here)
    message = str(refused.value)
    assert "built with TensorRT 10.13.0.35 for NVIDIA H200 (compute capability 9.0)" in message
    assert named in message and "rebuild it here" in message


def test_manifest_module_imports_only_stdlib_and_pydantic():
    import ast
    import sys
    from pathlib import Path

    import optimize.manifest as manifest

    tree = ast.parse(Path(manifest.__file__).read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert roots - set(sys.stdlib_module_names) - {"__future__"} == {"pydantic"}
