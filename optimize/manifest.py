"""The artifact manifest: the only contract between `optimize` and `serve`.

An artifact is a directory holding a model file and `manifest.json`. The
manifest says what the model is (inputs, outputs), how it was made (steps and
their settings, tool versions) and what was measured before and after.

This module imports only the standard library and pydantic, so a serving image
can read manifests without torch or tensorflow.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
    "INT64", "FP16", "FP32", "FP64", "BYTES",
]


class ArtifactError(Exception):
    """An artifact directory is missing, malformed or fails verification."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One model input or output; -1 marks a dynamic dimension."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...] = Field(description="-1 marks a dynamic axis")


class Step(_Strict):
    """One transformation applied to the model, with the settings it used."""

    name: str
    settings: dict[str, str | int | float | bool | None] = {}


class Measurement(_Strict):
    """What was measured for one model variant on the machine that built it."""

    accuracy: float = Field(description="metric value on the held-out split")
    latency_ms: dict[int, float] = Field(description="median latency by batch size")
    size_bytes: int


class Candidate(_Strict):
    """A variant the optimizer built and measured, and whether it shipped."""

    name: str
    measurement: Measurement
    accepted: bool
    reason: str


class Manifest(_Strict):
    format_version: int = FORMAT_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    runtime: Literal["onnxruntime"] = "onnxruntime"
    model_file: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metric: str = Field(description="name of the accuracy metric, e.g. top1")
    steps: tuple[Step, ...]
    before: Measurement
    after: Measurement
    candidates: tuple[Candidate, ...] = ()
    batch_deviation: float = Field(
        ge=0,
        description="largest abs difference between an output computed alone and inside a batch "
        "(dynamic quantization scales activations per batch); measured on the held-out data",
    )
    machine: str = Field(description="CPU the measurements were taken on")
    tool_versions: dict[str, str]
    created_at: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(manifest: Manifest, artifact_dir: Path) -> Path:
    path = Path(artifact_dir) / MANIFEST_FILE
    path.write_text(manifest.model_dump_json(indent=2) + "\n")
    return path


def read_manifest(artifact_dir: Path) -> Manifest:
    """Parse and check `manifest.json`; raises ArtifactError saying what is wrong."""
    path = Path(artifact_dir) / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(f"{artifact_dir}: expected an artifact directory with {MANIFEST_FILE}")
    try:
        manifest = Manifest.model_validate_json(path.read_text())
    except ValueError as error:
        raise ArtifactError(f"{path}: not a valid manifest: {error}") from error
    if manifest.format_version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: expected format_version {FORMAT_VERSION}, got {manifest.format_version}"
        )
    return manifest


def load_verified(artifact_dir: Path) -> tuple[Manifest, Path]:
    """Read the manifest and check the model file's sha256 against it.

    Returns the manifest and the model file's path; raises ArtifactError when
    the file is missing or its bytes are not the ones the manifest describes.
    """
    manifest = read_manifest(artifact_dir)
    model_path = Path(artifact_dir) / manifest.model_file
    if not model_path.is_file():
        raise ArtifactError(f"{artifact_dir}: manifest names {manifest.model_file}, which is missing")
    actual = sha256_of(model_path)
    if actual != manifest.sha256:
        raise ArtifactError(
            f"{model_path}: sha256 mismatch: manifest expects {manifest.sha256}, file has {actual}"
        )
    return manifest, model_path
