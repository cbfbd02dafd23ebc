"""Candidate builders for classifiers: each makes one ONNX variant of the fp32 export.

| name | what | needs |
|---|---|---|
| int8_dynamic | onnxruntime dynamic int8 (scales per batch at run time) | - |
| int8_per_row | int8 with one activation scale per row: batch-invariant (optimize/row_int8.py) | - |
| int8_static | onnxruntime static int8, QDQ, calibrated (fixed scales) | calibration data |
| pruned | structured pruning (torch-pruning: channels, head dims), fine-tuned, re-exported | PyTorch module, training data |
| pruned_int8_static | the pruned model, then static int8 | as both |
| sparse | global magnitude pruning, fine-tuned, zeros made permanent | PyTorch module, training data |
| distilled | a smaller student (default: the pruned teacher) trained on soft targets | PyTorch module, training data |
| torch_int8_static | PyTorch's static int8 (FX, x86/qnnpack), as TorchScript | PyTorch module |
| fp16 | fp16 weights and compute, FP32 inputs and outputs (GPU target; optimize/gpu.py) | - |
| tflite_fp32 | LiteRT (.tflite, XNNPACK), fp32 (optimize/litert_candidates.py) | Keras model or PyTorch module |
| tflite_dynamic_int8 | LiteRT, int8 weights, activations quantized per row at run time | as tflite_fp32 |
| tflite_int8 | LiteRT, full-integer int8, calibrated on validation rows | as tflite_fp32 |
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from optimize.export import EXPORTERS, OPSET, example_tensors, export_checked
from optimize.feeds import resize_rows, row_count, take_rows
from optimize.kind import Built
from optimize.litert_candidates import MODES as TFLITE_MODES
from optimize.litert_candidates import build_tflite, tflite_obstacle
from optimize.manifest import Step
from optimize.prune import CRITERION, count_parameters, gzip_size, magnitude_prune, pruning_obstacle, structured_prune
from optimize.quantize import prepare, quantize_int8_dynamic, quantize_int8_static
from optimize.settings import OptimizeSettings
from optimize.source import ModelSource
from optimize.train import distill, fit

CALIBRATION_BATCH = 32


@dataclass
class Workspace:
    source: ModelSource
    fp32: Built
    work: Path
    settings: OptimizeSettings
    log: Callable[[str], None]
    built: dict[str, Built] = field(default_factory=dict)


def not_applicable(name: str, source: ModelSource) -> str | None:
    """Why a candidate cannot be built for this source, or None."""
    if name in TFLITE_MODES:
        return tflite_obstacle(source)
    needs_module = name in ("pruned", "pruned_int8_static", "sparse", "distilled", "torch_int8_static")
    if needs_module and source.model_format == "onnx":
        return "needs a PyTorch module (the model came as an ONNX file)"
    if name == "torch_int8_static":
        return None if _fx_traceable(source) else "PyTorch FX quantization needs an FX-traceable nn.Module"
    if needs_module and source.train_inputs is None:
        return "needs training data for fine-tuning"
    if name.startswith("pruned") or (name == "distilled" and source.student is None):
        obstacle = pruning_obstacle(source.module, example_tensors(source))
        return None if obstacle is None else f"structured pruning: {obstacle}"
    return None


def int8_dynamic(ws: Workspace) -> Built:
    s = ws.settings
    target = ws.work / "int8_dynamic.onnx"
    step = quantize_int8_dynamic(_prepared(ws, ws.fp32.path), target, s.quantize_per_channel, s.quantize_reduce_range,
                                 weight_type=s.quantize_weight_type)
    return Built(target, [*ws.fp32.steps, step])


def int8_per_row(ws: Workspace) -> Built:
    from optimize.row_int8 import quantize_int8_per_row

    target = ws.work / "int8_per_row.onnx"
    return Built(target, [*ws.fp32.steps, quantize_int8_per_row(ws.fp32.path, target)])


def int8_static(ws: Workspace, base: Built | None = None, name: str = "int8_static") -> Built:
    base = base or ws.fp32
    target = ws.work / f"{name}.onnx"
    step = quantize_int8_static(_prepared(ws, base.path), target, _calibration_feeds(ws.source),
                                ws.settings.calibration_method, ws.settings.static_per_channel)
    return Built(target, [*base.steps, step])


def pruned(ws: Workspace) -> Built:
    s, source = ws.settings, ws.source
    smaller = structured_prune(source.module, s.prune_ratio, example_tensors(source))
    fit(smaller.module, source.train_inputs, source.train_labels, s.fine_tune_epochs, s.fine_tune_lr,
        f"fine-tuning after {s.prune_ratio:.0%} structured pruning")
    step = Step(name="prune_structured", settings={
        "ratio": s.prune_ratio, "criterion": CRITERION, "pruner": _torch_pruning_version(),
        "coupled_groups_pruned": smaller.groups, "attention": smaller.attention,
        "fine_tune_epochs": s.fine_tune_epochs,
        "parameters_before": count_parameters(source.module), "parameters_after": count_parameters(smaller.module),
    })
    path, export = _export(ws, "pruned", smaller.module)
    return Built(path, [step, export])


def pruned_int8_static(ws: Workspace) -> Built:
    base = ws.built.get("pruned") or pruned(ws)
    return int8_static(ws, base, "pruned_int8_static")


def sparse(ws: Workspace) -> Built:
    s, source = ws.settings, ws.source
    model, sparsity = magnitude_prune(source.module, s.sparsity, lambda m: fit(
        m, source.train_inputs, source.train_labels, s.fine_tune_epochs, s.fine_tune_lr,
        f"fine-tuning at {s.sparsity:.0%} sparsity"))
    path, export = _export(ws, "sparse", model)
    dense, zeros = gzip_size(ws.fp32.path.read_bytes()), gzip_size(path.read_bytes())
    step = Step(name="prune_magnitude", settings={
        "method": "global L1 unstructured, then prune.remove", "target_sparsity": s.sparsity,
        "measured_sparsity": round(sparsity, 4), "fine_tune_epochs": s.fine_tune_epochs,
        "gzip_bytes_dense": dense, "gzip_bytes_sparse": zeros,
        "note": "zeros only shrink the compressed file; dense runtimes run them at full cost (no speedup)",
    })
    return Built(path, [step, export])


def distilled(ws: Workspace) -> Built:
    s, source = ws.settings, ws.source
    student = source.student or structured_prune(source.module, s.student_ratio, example_tensors(source)).module
    distill(source.module, student, source.train_inputs, source.train_labels, s.distill_epochs,
            s.distill_temperature, s.distill_alpha)
    step = Step(name="distill", settings={
        "temperature": s.distill_temperature, "alpha": s.distill_alpha, "epochs": s.distill_epochs,
        "teacher_parameters": count_parameters(source.module), "student_parameters": count_parameters(student),
        "student": "given" if source.student is not None else f"teacher with {s.student_ratio:.0%} of each coupled "
                   f"group's channels removed ({_torch_pruning_version()})",
    })
    path, export = _export(ws, "distilled", student)
    return Built(path, [step, export])


def torch_int8_static(ws: Workspace) -> Built:
    from optimize.torch_quantize import quantize_torch_static

    target = ws.work / "torch_int8_static.pt"
    step = quantize_torch_static(ws.source.module, ws.source.calibration, ws.settings.torch_backend, target)
    return Built(target, [step])


def fp16(ws: Workspace) -> Built:
    from optimize.gpu import convert_fp16

    target = ws.work / "fp16.onnx"
    return Built(target, [*ws.fp32.steps, convert_fp16(ws.fp32.path, target)])


def _torch_pruning_version() -> str:
    from importlib.metadata import version

    return f"torch-pruning {version('torch-pruning')}"


def _fx_traceable(source: ModelSource) -> bool:
    import torch

    if source.model_format != "pytorch":
        return False
    try:
        torch.fx.symbolic_trace(source.module)
    except Exception:  # noqa: BLE001 - FX raises many kinds of errors for untraceable code
        return False
    return True


BUILDERS: dict[str, Callable[[Workspace], Built]] = {
    "int8_dynamic": int8_dynamic, "int8_per_row": int8_per_row, "int8_static": int8_static, "pruned": pruned,
    "pruned_int8_static": pruned_int8_static, "sparse": sparse, "distilled": distilled,
    "torch_int8_static": torch_int8_static, "fp16": fp16,
    **{name: (lambda ws, name=name: build_tflite(ws, name)) for name in TFLITE_MODES},
}


def _export(ws: Workspace, name: str, module) -> tuple[Path, Step]:
    """Export a smaller nn.Module made from the source's (pruned, distilled), checked against it."""
    source = dataclasses.replace(ws.source, module=module, onnx_file=None)
    path = ws.work / f"{name}.onnx"
    difference = export_checked(source, path, ws.settings.parity_tolerance)
    export = Step(name="export_onnx", settings={"exporter": EXPORTERS["pytorch"], "opset": OPSET,
                                                "parity_max_abs_diff": difference})
    return path, export


def _prepared(ws: Workspace, model: Path) -> Path:
    prepared = model.with_suffix(".prepared.onnx")
    if not prepared.exists():
        prepare(model, prepared)
    return prepared


def _calibration_feeds(source: ModelSource) -> list[dict[str, np.ndarray]]:
    """Equal-size batches (entropy and percentile calibration stack them) from the calibration data."""
    data = source.feed(source.calibration)
    usable = max(CALIBRATION_BATCH, row_count(data) // CALIBRATION_BATCH * CALIBRATION_BATCH)
    data = resize_rows(data, usable)
    return [take_rows(data, slice(i, i + CALIBRATION_BATCH)) for i in range(0, usable, CALIBRATION_BATCH)]
