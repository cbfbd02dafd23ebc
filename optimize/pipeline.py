"""The optimize stage: export, check, quantize, measure, choose, write the artifact."""

from __future__ import annotations

import datetime
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Callable

import onnxruntime as ort

from optimize import measure
from optimize.export import OPSET, check_parity, export_onnx
from optimize.manifest import Candidate, Manifest, Measurement, Step, TensorSpec, sha256_of, write_manifest
from optimize.quantize import prepare, quantize_int8_dynamic
from optimize.report import write_report
from optimize.settings import OptimizeSettings
from optimize.source import ModelSource

ORT_DATATYPES = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
    "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(int16)": "INT16",
    "tensor(int8)": "INT8", "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL", "tensor(string)": "BYTES",
}


def optimize_model(
    source: ModelSource, out_dir: Path, settings: OptimizeSettings, log: Callable[[str], None] = print
) -> Manifest:
    """Build fp32 and int8 candidates, keep the fastest that holds accuracy, write the artifact."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="optiserve-") as work:
        paths = {"fp32": Path(work) / "fp32.onnx", "int8": Path(work) / "int8.onnx"}
        export_onnx(source, paths["fp32"])
        sessions = {"fp32": measure.open_session(paths["fp32"])}
        fp32_outputs = measure.run(sessions["fp32"], source.validation_inputs)
        difference = check_parity(source, fp32_outputs, settings.parity_tolerance)
        log(f"ONNX vs PyTorch on {len(fp32_outputs)} held-out inputs: max abs diff {difference:.2e} "
            f"(tolerance {settings.parity_tolerance:.0e})")
        export_step = Step(name="export_onnx", settings={
            "exporter": _exporter(source), "opset": OPSET, "dynamic_axes": "batch (axis 0)",
            "parity_max_abs_diff": difference, "parity_tolerance": settings.parity_tolerance,
        })
        prepared = Path(work) / "prepared.onnx"
        prepare(paths["fp32"], prepared)
        quantize_step = quantize_int8_dynamic(
            prepared, paths["int8"], settings.quantize_per_channel, settings.quantize_reduce_range
        )
        sessions["int8"] = measure.open_session(paths["int8"])
        measurements = _measure(sessions, paths, source, settings)
        candidates = _judge(measurements, settings)
        for candidate in candidates:
            log(describe_candidate(candidate))
        chosen = "int8" if candidates[1].accepted else "fp32"
        shutil.copyfile(paths[chosen], out_dir / "model.onnx")
        steps = source.prior_steps + ((export_step, quantize_step) if chosen == "int8" else (export_step,))
        deviation = measure.batch_deviation(
            sessions[chosen], source.validation_inputs, max(settings.latency_batch_sizes)
        )
        log(f"batch deviation of the shipped model: {deviation:.2e} (alone vs inside a batch)")
    manifest = Manifest(
        name=source.name, version=source.version, sha256=sha256_of(out_dir / "model.onnx"),
        inputs=tensor_specs(sessions[chosen].get_inputs()),
        outputs=tensor_specs(sessions[chosen].get_outputs()),
        metric="top1", steps=steps, before=measurements["fp32"], after=measurements[chosen],
        candidates=tuple(candidates), batch_deviation=deviation, machine=measure.cpu_name(),
        tool_versions=tool_versions(), created_at=datetime.datetime.now(datetime.UTC).isoformat(),
    )
    write_manifest(manifest, out_dir)
    log(f"wrote {out_dir / 'model.onnx'} ({chosen}) and {out_dir / 'manifest.json'}")
    report = write_report(manifest, out_dir)
    log(f"report: {', '.join(path.name for path in report)}")
    return manifest


def _measure(sessions, paths, source: ModelSource, settings: OptimizeSettings) -> dict[str, Measurement]:
    latencies = measure.interleaved_latency_ms(
        sessions, measure.resized_feed(source.input_name, source.validation_inputs),
        settings.latency_batch_sizes, settings.latency_repeats,
    )
    return {
        name: Measurement(
            accuracy=measure.top1_accuracy(measure.run(session, source.validation_inputs), source.validation_labels),
            latency_ms=latencies[name],
            size_bytes=paths[name].stat().st_size,
        )
        for name, session in sessions.items()
    }


def _judge(measurements: dict[str, Measurement], settings: OptimizeSettings) -> list[Candidate]:
    """fp32 is the baseline; int8 ships only if it holds accuracy and is not slower at any batch size."""
    baseline, int8 = measurements["fp32"], measurements["int8"]
    drop = baseline.accuracy - int8.accuracy
    slower = [b for b, ms in int8.latency_ms.items() if ms > baseline.latency_ms[b]]
    if drop > settings.accuracy_tolerance:
        verdict = (False, f"top-1 drop {drop:.4f} exceeds tolerance {settings.accuracy_tolerance}")
    elif slower:
        verdict = (False, f"slower than fp32 on this CPU at batch size {', '.join(map(str, slower))}")
    else:
        verdict = (True, f"top-1 drop {drop:.4f} within {settings.accuracy_tolerance}, not slower than fp32")
    return [
        Candidate(name="fp32", measurement=baseline, accepted=True, reason="baseline"),
        Candidate(name="int8_dynamic", measurement=int8, accepted=verdict[0], reason=verdict[1]),
    ]


def _exporter(source: ModelSource) -> str:
    if source.onnx_file is not None:
        return f"none: the ONNX file {source.onnx_file.name} as given"
    if type(source.module).__name__ == "RecursiveScriptModule":
        return "torch.onnx.export(dynamo=False), TorchScript input"
    return "torch.onnx.export(dynamo=True)"


def describe_candidate(candidate: Candidate) -> str:
    m = candidate.measurement
    latency = ", ".join(f"b{b} {ms:.3f} ms" for b, ms in m.latency_ms.items())
    status = "accepted" if candidate.accepted else "rejected"
    score = f"{m.accuracy:.4f}" if m.worst is None else f"{m.accuracy:.4f} (worst {m.worst:.4f})"
    return (f"{candidate.name:13s} score {score}  {latency}  {m.size_bytes / 1024:.1f} KiB  "
            f"{status}: {candidate.reason}")


def tensor_specs(nodes: list[ort.NodeArg]) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(
            name=node.name,
            datatype=ORT_DATATYPES[node.type],
            shape=tuple(d if isinstance(d, int) else -1 for d in node.shape),
        )
        for node in nodes
    )


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("optiserve", "torch", "onnx", "onnxruntime", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
