"""The artifact directory's manifest: assembled from what the pipeline measured and chose, written with its report.

The model file (and a kind's own files: a tokenizer, a TensorRT engine) are
already in the directory; the manifest records their sha256, the tensors the
model file takes and gives, every step that made it, every candidate and the
tool versions, so the artifact explains itself.
"""

from __future__ import annotations

import datetime
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from optimize import measure
from optimize.manifest import (
    Candidate, Manifest, Measurement, Step, TensorRTEngine, TensorSpec, TextInput, sha256_of, write_manifest,
)
from optimize.report import write_report
from optimize.settings import OptimizeSettings

ORT_DATATYPES = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
    "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(int16)": "INT16",
    "tensor(int8)": "INT8", "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL", "tensor(string)": "BYTES",
}
RUNTIMES = {".onnx": "onnxruntime", ".pt": "torchscript", ".pt2": "torch_export", ".tflite": "litert"}
TOOLS = ("optiserve", "torch", "onnx", "onnxruntime", "numpy", "tensorflow", "ai-edge-litert", "litert-torch",
         "ai-edge-quantizer")


@dataclass(frozen=True)
class Extras:
    """What a kind of model adds to the artifact beside the shipped model file."""

    steps: tuple[Step, ...] = ()  # after the shipped candidate's own (a TensorRT engine build)
    tensorrt: TensorRTEngine | None = None
    text_input: TextInput | None = None
    files: tuple[str, ...] = ()  # other files it wrote into the artifact (tokenizer.json)


@dataclass(frozen=True)
class Shipped:
    """The chosen candidate as it went into the artifact."""

    name: str
    model_file: str
    steps: tuple[Step, ...]  # every step that made it, from the source's own to the last
    session: object  # an onnxruntime session (or the same API) of the chosen model: its tensors


def write_artifact(out_dir: Path, source, metric: str, shipped: Shipped, candidates: list[Candidate],
                   measurements: dict[str, Measurement], extras: Extras, settings: OptimizeSettings,
                   log: Callable[[str], None]) -> Manifest:
    """Assemble the manifest, write it and the report next to the model; return the manifest."""
    manifest = Manifest(
        name=source.name, version=source.version, sha256=sha256_of(out_dir / shipped.model_file),
        runtime=runtime_of(Path(shipped.model_file)), model_file=shipped.model_file, target=settings.target,
        tensorrt=extras.tensorrt, text_input=extras.text_input,
        inputs=tensor_specs(shipped.session.get_inputs(), _id_ranges(out_dir / shipped.model_file)),
        outputs=tensor_specs(shipped.session.get_outputs()),
        metric=metric, steps=shipped.steps, before=measurements["fp32"], after=measurements[shipped.name],
        candidates=tuple(candidates), batch_deviation=measurements[shipped.name].batch_deviation,
        machine=measure.cpu_name(), tool_versions=tool_versions(),
        created_at=datetime.datetime.now(datetime.UTC).isoformat(),
    )
    write_manifest(manifest, out_dir)
    written = ", ".join((shipped.model_file, *extras.files))
    log(f"wrote {written} ({shipped.name}, target {settings.target}) and manifest.json into {out_dir}")
    report = write_report(manifest, out_dir)
    log(f"report: {', '.join(path.name for path in report)}")
    return manifest


def runtime_of(model_file: Path) -> str:
    """The runtime that runs a model file, by its suffix (Manifest.runtime)."""
    return RUNTIMES[Path(model_file).suffix]


def tensor_specs(nodes, id_ranges: dict[str, tuple[int, int]] | None = None) -> tuple[TensorSpec, ...]:
    """The V2 tensor specs of onnxruntime NodeArgs (or objects with the same name, type and shape); a dynamic
    axis keeps the model's name for it, and an id input its valid range."""
    return tuple(
        TensorSpec(
            name=node.name,
            datatype=ORT_DATATYPES[node.type],
            shape=tuple(d if isinstance(d, int) else -1 for d in node.shape),
            dim_names=tuple(d if isinstance(d, str) and d else None for d in node.shape)
            if any(isinstance(d, str) and d for d in node.shape) else None,
            value_range=(id_ranges or {}).get(node.name),
        )
        for node in nodes
    )


def _id_ranges(model_file: Path) -> dict[str, tuple[int, int]]:
    if model_file.suffix != ".onnx":
        return {}
    from optimize.graph_facts import id_ranges

    return id_ranges(model_file)


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in TOOLS:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
