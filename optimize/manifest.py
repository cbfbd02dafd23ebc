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
    dim_names: tuple[str | None, ...] | None = Field(
        None, description="the model's name for each dynamic axis (None for a fixed one): inputs whose axes share a "
        "name must agree in size, which the server checks before running the model",
    )
    value_range: tuple[int, int] | None = Field(
        None, description="integer inputs that index a table (token ids into an embedding): the smallest and "
        "largest valid value; the server refuses others with 400",
    )


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


class TensorRTEngine(_Strict):
    """A serialized TensorRT engine: it loads only on the GPU model and TensorRT version that built it.

    The engine has one optimization profile covering batch `min_batch` to
    `max_batch`; the INT8 calibration cache and the timing cache it was built
    with ship beside it, so a rebuild on another GPU skips calibration.
    """

    engine_file: str = "model.engine"
    engine_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tensorrt_version: str
    gpu_name: str = Field(description="torch.cuda.get_device_name() of the GPU that built the engine")
    compute_capability: str = Field(pattern=r"^[0-9]+\.[0-9]+$", description="major.minor, e.g. 9.0 for Hopper")
    precisions: tuple[str, ...] = Field(description="builder flags set: fp16, int8")
    min_batch: int = Field(1, ge=1)
    opt_batch: int = Field(ge=1)
    max_batch: int = Field(ge=1)
    calibration_cache: str | None = Field("calibration.cache", description="INT8 calibration cache, when int8 is set")
    timing_cache: str | None = "timing.cache"


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
    relative_latency: float | None = Field(
        None, description="latency relative to fp32 timed side by side (geometric mean over batch sizes, median "
        "block of interleaved runs; below 1 is faster)",
    )
    relative_latency_range: tuple[float, float] | None = Field(
        None, description="the lowest and highest block's relative latency: the measured spread"
    )
    size_bytes: int
    batch_deviation: float | None = Field(
        None, description="largest abs difference between an output computed alone and inside a batch"
    )


Runtime = Literal["onnxruntime", "torchscript", "torch_export", "litert"]


class Candidate(_Strict):
    """A variant the optimizer built and measured, and whether it shipped."""

    name: str
    runtime: Runtime = Field("onnxruntime", description="what ran it when it was measured, as Manifest.runtime")
    measurement: Measurement
    accepted: bool
    reason: str
    steps: tuple[Step, ...] = Field((), description="how this candidate was made")


class Manifest(_Strict):
    format_version: int = FORMAT_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    runtime: Runtime = Field(
        "onnxruntime", description="what runs model_file: onnxruntime (.onnx), PyTorch's TorchScript (.pt), "
        "a torch.export program (.pt2) or LiteRT with XNNPACK (.tflite; one input, mapped by position)",
    )
    target: Literal["cpu", "gpu"] = Field(
        "cpu", description="the device the artifact was optimized for; gpu artifacts (fp16) are served on a GPU "
        "where one is present",
    )
    model_file: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: tuple[TensorSpec, ...] = Field(description="the model file's own inputs")
    outputs: tuple[TensorSpec, ...]
    text_input: TextInput | None = Field(None, description="set when requests send strings to be tokenized")
    tensorrt: TensorRTEngine | None = Field(None, description="a TensorRT engine built from model_file, if any")
    metric: str = Field(description="name of the accuracy metric: top1, the source's own metric, or cosine_to_fp32 "
                        "for embeddings")
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
    if manifest.tensorrt is not None:
        _verify_file(Path(artifact_dir) / manifest.tensorrt.engine_file, manifest.tensorrt.engine_sha256)
    return manifest, model_path


def engine_mismatch(engine: TensorRTEngine, tensorrt_version: str, gpu_name: str, compute_capability: str) -> str | None:
    """Why `engine` cannot load here (None if it can): TensorRT engines are tied to the exact
    TensorRT version and GPU model that built them."""
    built = (engine.tensorrt_version, engine.gpu_name, engine.compute_capability)
    here = (tensorrt_version, gpu_name, compute_capability)
    if built == here:
        return None
    return (f"{engine.engine_file} was built with TensorRT {built[0]} for {built[1]} (compute capability "
            f"{built[2]}); this machine has TensorRT {here[0]} and {here[1]} (compute capability {here[2]}). "
            "A TensorRT engine loads only on the TensorRT version and GPU model that built it: rebuild it here "
            "with `optiserve optimize --target gpu`, or serve the artifact's ONNX model without the engine")


def check_engine(engine: TensorRTEngine, tensorrt_version: str, gpu_name: str, compute_capability: str) -> None:
    """Raise ArtifactError saying what was built and what is here when the engine cannot load here."""
    problem = engine_mismatch(engine, tensorrt_version, gpu_name, compute_capability)
    if problem is not None:
        raise ArtifactError(problem)


def _verify_file(path: Path, expected_sha256: str) -> None:
    if not path.is_file():
        raise ArtifactError(f"{path.parent}: manifest names {path.name}, which is missing")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ArtifactError(f"{path}: sha256 mismatch: manifest expects {expected_sha256}, file has {actual}")
