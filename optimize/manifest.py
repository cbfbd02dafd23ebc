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


class TextInput(_Strict):
    """Strings in: the server tokenizes a BYTES input into the model's token-id inputs.

    Requests send one string per row in `name`; the server encodes each with
    the tokenizer file (Hugging Face `tokenizers` JSON), truncates to
    `max_length` tokens and pads every batch to its longest row, filling
    `ids_input` and `mask_input` (1 for tokens, 0 for padding).
    """

    name: str = "text"
    tokenizer_file: str = "tokenizer.json"
    tokenizer_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    max_length: int = Field(gt=0, description="tokens kept per string, special tokens included")
    ids_input: str = "input_ids"
    mask_input: str = "attention_mask"


class Step(_Strict):
    """One transformation applied to the model, with the settings it used."""

    name: str
    settings: dict[str, str | int | float | bool | None] = {}


class Measurement(_Strict):
    """What was measured for one model variant on the machine that built it."""

    accuracy: float = Field(description="metric value on the held-out split")
    worst: float | None = Field(
        None, description="lowest per-example value, for per-example metrics such as cosine to fp32"
    )
    latency_ms: dict[int, float] = Field(description="median latency by batch size")
    size_bytes: int
    batch_deviation: float | None = Field(
        None, description="largest abs difference between an output computed alone and inside a batch"
    )


class Candidate(_Strict):
    """A variant the optimizer built and measured, and whether it shipped."""

    name: str
    measurement: Measurement
    accepted: bool
    reason: str
    steps: tuple[Step, ...] = Field((), description="how this candidate was made")


class Manifest(_Strict):
    format_version: int = FORMAT_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    runtime: Literal["onnxruntime", "torchscript"] = Field(
        "onnxruntime", description="what runs model_file: onnxruntime (.onnx) or PyTorch's TorchScript (.pt)"
    )
    model_file: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: tuple[TensorSpec, ...] = Field(description="the model file's own inputs")
    outputs: tuple[TensorSpec, ...]
    text_input: TextInput | None = Field(None, description="set when requests send strings to be tokenized")
    metric: str = Field(description="name of the accuracy metric: top1, or cosine_to_fp32 for embeddings")
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

    @property
    def request_inputs(self) -> tuple[TensorSpec, ...]:
        """The inputs a request sends: one BYTES string per row for text models, else the model's own."""
        if self.text_input is None:
            return self.inputs
        return (TensorSpec(name=self.text_input.name, datatype="BYTES", shape=(-1,)),)


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
    _verify_file(model_path, manifest.sha256)
    if manifest.text_input is not None:
        _verify_file(Path(artifact_dir) / manifest.text_input.tokenizer_file, manifest.text_input.tokenizer_sha256)
    return manifest, model_path


def _verify_file(path: Path, expected_sha256: str) -> None:
    if not path.is_file():
        raise ArtifactError(f"{path.parent}: manifest names {path.name}, which is missing")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ArtifactError(f"{path}: sha256 mismatch: manifest expects {expected_sha256}, file has {actual}")
