"""The optimize stage for classifiers: export, build candidates, measure, choose, write the artifact.

fp32 is the baseline. Each candidate (optimize/candidates.py) is timed side
by side with it at every batch size, scored on held-out data, and checked for
batch invariance. A candidate ships only if it keeps top-1 within tolerance
and is not slower than fp32 at any batch size measured; among those the
fastest wins, preferring batch-invariant ones.
"""

from __future__ import annotations

import datetime
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from optimize import measure
from optimize.candidates import BUILDERS, Built, Workspace, not_applicable
from optimize.export import OPSET, check_parity, export_onnx
from optimize.manifest import Candidate, Manifest, Measurement, Step, TensorSpec, sha256_of, write_manifest
from optimize.report import write_report
from optimize.settings import OptimizeSettings
from optimize.source import ModelSource

ORT_DATATYPES = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
    "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(int16)": "INT16",
    "tensor(int8)": "INT8", "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL", "tensor(string)": "BYTES",
}
RUNTIMES = {".onnx": "onnxruntime", ".pt": "torchscript", ".pt2": "torch_export"}


def optimize_model(
    source: ModelSource, out_dir: Path, settings: OptimizeSettings, log: Callable[[str], None] = print
) -> Manifest:
    """Build the fp32 export and the candidates asked for, keep the fastest that holds accuracy, write the artifact."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="optiserve-") as work:
        workspace = Workspace(source, _export_fp32(source, Path(work), settings, log), Path(work), settings, log)
        built = {"fp32": workspace.fp32, **_build_candidates(workspace)}
        sessions = {name: _open(b.path, source) for name, b in built.items()}
        measurements = _measure(sessions, built, source, settings, log)
        judged = _judge(measurements, settings, source.metric_name)
        candidates = [c.model_copy(update={"steps": tuple(built[c.name].steps)}) for c in judged]
        for candidate in candidates:
            log(describe_candidate(candidate))
        chosen = choose_candidate(candidates, settings, log)
        model_file, steps = _ship(built[chosen], source, settings, out_dir)
        engine, engine_step = _maybe_engine(workspace, out_dir)
    manifest = Manifest(
        name=source.name, version=source.version, sha256=sha256_of(out_dir / model_file),
        runtime=RUNTIMES[Path(model_file).suffix], model_file=model_file, target=settings.target, tensorrt=engine,
        inputs=tensor_specs(sessions[chosen].get_inputs()), outputs=tensor_specs(sessions[chosen].get_outputs()),
        metric="top1", steps=(*source.prior_steps, *steps, *engine_step), before=measurements["fp32"],
        after=measurements[chosen], candidates=tuple(candidates),
        batch_deviation=measurements[chosen].batch_deviation, machine=measure.cpu_name(),
        tool_versions=tool_versions(), created_at=datetime.datetime.now(datetime.UTC).isoformat(),
    )
    write_manifest(manifest, out_dir)
    log(f"wrote {out_dir / model_file} ({chosen}, target {settings.target}) and {out_dir / 'manifest.json'}")
    report = write_report(manifest, out_dir)
    log(f"report: {', '.join(path.name for path in report)}")
    return manifest


def _ship(built: Built, source: ModelSource, settings: OptimizeSettings, out_dir: Path) -> tuple[str, list[Step]]:
    """Put the chosen variant into the artifact: its file as is, or for the GPU torch runtime a
    torch.export program of the PyTorch module (fp32; the server casts under autocast)."""
    if settings.target == "gpu" and settings.gpu_runtime == "torch":
        import torch

        from optimize.gpu import PROGRAM_FILE, export_program

        if source.module is None or isinstance(source.module, torch.jit.ScriptModule):
            raise ValueError("gpu_runtime torch: expected a PyTorch nn.Module to export with torch.export, "
                             f"got {'an ONNX file' if source.module is None else 'a TorchScript module'}")
        step = export_program(source.module, (torch.from_numpy(source.example_input),),
                              ({0: torch.export.Dim("batch")},), out_dir / PROGRAM_FILE)
        return PROGRAM_FILE, [*built.steps, step]
    model_file = "model.pt" if built.path.suffix == ".pt" else "model.onnx"
    shutil.copyfile(built.path, out_dir / model_file)
    return model_file, built.steps


def _maybe_engine(ws: Workspace, out_dir: Path) -> tuple[object | None, tuple[Step, ...]]:
    """GPU target with the ONNX runtime: a TensorRT engine from the fp32 export, where TensorRT and a GPU are."""
    s = ws.settings
    if s.target != "gpu" or s.gpu_runtime != "onnxruntime" or not s.tensorrt_engine:
        return None, ()
    from optimize.tensorrt_build import build_engine, engine_unavailable

    reason = engine_unavailable()
    if reason is not None:
        ws.log(f"TensorRT engine: not built, {reason}; the fp16 ONNX model serves on onnxruntime's CUDA or "
               "TensorRT provider")
        return None, ()
    engine, step = build_engine(ws.fp32.path, ws.source.input_name, ws.source.calibration,
                                s.serving_max_batch_size, out_dir, ws.log)
    return engine, (step,)


def _open(path: Path, source: ModelSource):
    """An onnxruntime session, or for a TorchScript candidate an adapter with the same API."""
    if path.suffix != ".pt":
        return measure.open_session(path)
    from optimize.torch_quantize import TorchScriptSession

    classes = int(measure.run(measure.open_session(path.with_name("fp32.onnx")), source.example_input[:1]).shape[1])
    return TorchScriptSession(path, source.input_name, source.output_name, source.example_input.shape[1:], classes)


def _export_fp32(source: ModelSource, work: Path, settings: OptimizeSettings, log) -> Built:
    path = work / "fp32.onnx"
    export_onnx(source, path)
    outputs = measure.run(measure.open_session(path), source.validation_inputs)
    difference = check_parity(source, outputs, settings.parity_tolerance)
    reference = "the given ONNX file" if source.onnx_file is not None else "PyTorch"
    log(f"ONNX vs {reference} on {len(outputs)} held-out inputs: max abs diff {difference:.2e} "
        f"(tolerance {settings.parity_tolerance:.0e})")
    return Built(path, [Step(name="export_onnx", settings={
        "exporter": _exporter(source), "opset": OPSET, "dynamic_axes": "batch (axis 0)",
        "parity_max_abs_diff": difference, "parity_tolerance": settings.parity_tolerance,
    })])


def _build_candidates(workspace: Workspace) -> dict[str, Built]:
    for name in workspace.settings.planned_candidates:
        reason = not_applicable(name, workspace.source)
        if reason is not None:
            workspace.log(f"{name}: skipped, {reason}")
            continue
        workspace.log(f"{name}: building")
        workspace.built[name] = BUILDERS[name](workspace)
    return workspace.built


def _measure(sessions, built, source: ModelSource, settings: OptimizeSettings, log) -> dict[str, Measurement]:
    sizes = settings.batch_sizes
    log(f"timing {', '.join(sessions)} at batch sizes {sizes}, interleaved, {settings.latency_repeats} repeats")
    latencies = measure.interleaved_latency_ms(
        sessions, measure.resized_feed(source.input_name, source.validation_inputs), sizes, settings.latency_repeats,
    )
    return {
        name: Measurement(
            accuracy=source.score(measure.run(session, source.validation_inputs)),
            latency_ms=latencies[name],
            size_bytes=built[name].path.stat().st_size,
            batch_deviation=measure.batch_deviation(session, source.validation_inputs, max(sizes)),
        )
        for name, session in sessions.items()
    }


def _judge(measurements: dict[str, Measurement], settings: OptimizeSettings, metric: str = "top-1") -> list[Candidate]:
    """fp32 is the baseline; a candidate is accepted if it holds the score and is not slower at any batch size."""
    def accuracy_problem(measured: Measurement, baseline: Measurement) -> tuple[str | None, str]:
        drop = baseline.accuracy - measured.accuracy
        allowed = settings.accuracy_tolerance
        tolerance = f"{allowed}"
        if settings.accuracy_tolerance_relative:
            allowed *= abs(baseline.accuracy)
            tolerance = f"{allowed:.4f} ({settings.accuracy_tolerance:.2%} of fp32's {baseline.accuracy:.4f})"
        if drop > allowed:
            return f"{metric} drop {drop:.4f} exceeds tolerance {tolerance}", ""
        return None, f"{metric} drop {drop:.4f} within {tolerance}"

    return judge(measurements, accuracy_problem, compare_latency=settings.target == "cpu")


def judge(measurements: dict[str, Measurement], accuracy_problem, compare_latency: bool = True) -> list[Candidate]:
    """Every candidate against fp32: rejected if `accuracy_problem(measured, baseline)` names one (it
    returns (problem or None, what held)), or if it is slower at any batch size measured.

    For a GPU target (`compare_latency` False) latency plays no part: it was measured on this CPU,
    where fp16 runs through casts, and says nothing about the GPU.
    """
    baseline = measurements["fp32"]
    candidates = [Candidate(name="fp32", measurement=baseline, accepted=True, reason="baseline")]
    for name, measured in measurements.items():
        if name == "fp32":
            continue
        problem, held = accuracy_problem(measured, baseline)
        slower = [b for b, ms in measured.latency_ms.items() if ms > baseline.latency_ms[b]] if compare_latency else []
        if problem:
            verdict = (False, problem)
        elif slower:
            verdict = (False, f"{held}, but slower than fp32 on this CPU at batch size {', '.join(map(str, slower))}")
        elif not compare_latency:
            verdict = (True, f"{held}; GPU target: judged on accuracy, CPU latency is no measure of GPU speed")
        else:
            verdict = (True, f"{held}, not slower than fp32")
        candidates.append(Candidate(name=name, measurement=measured, accepted=verdict[0], reason=verdict[1]))
    return candidates


def choose_candidate(candidates: list[Candidate], settings: OptimizeSettings, log) -> str:
    """The accepted candidate with the lowest latency relative to fp32 (geometric mean over batch sizes).

    In auto mode, unless the user accepts batch deviation, batch-invariant
    candidates are preferred: a cached answer must not depend on what it was
    batched with.
    fp32 is always accepted and batch-invariant, so there is always a choice.
    A GPU target ships its GPU variant (fp16) when accepted: CPU timings do not rank GPU variants.
    """
    if settings.target == "gpu":
        from optimize.gpu import gpu_choice

        return gpu_choice(candidates)
    accepted = [c for c in candidates if c.accepted]
    invariant = [c for c in accepted if (c.measurement.batch_deviation or 0) < settings.batch_invariant_below]
    baseline = candidates[0].measurement.latency_ms

    def relative_latency(candidate: Candidate) -> float:
        return float(np.exp(np.mean([np.log(candidate.measurement.latency_ms[b] / baseline[b]) for b in baseline])))

    fastest = min(accepted, key=relative_latency)
    if settings.accept_batch_deviation or not settings.auto:  # candidates named by the user: the fastest
        return fastest.name
    best = min(invariant or accepted, key=relative_latency)
    if fastest is not best:
        log(f"{fastest.name} is faster but its answers move with their batch (deviation "
            f"{fastest.measurement.batch_deviation:.2e}); shipping batch-invariant {best.name} instead "
            "(accept_batch_deviation allows it)")
    return best.name


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
