"""Classifiers in the optimize pipeline: top-1 (or the source's metric), the candidate builders, TensorRT.

fp32 is the export of the source's model (a PyTorch module, TorchScript, or
an ONNX file as given), checked against it on the held-out inputs. The
candidates are the ones settings ask for (optimize/candidates.py), each
skipped with a reason where it does not apply. A candidate may lose at most
`accuracy_tolerance` of the score, absolute or relative to fp32's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from optimize import measure
from optimize.artifact import Extras
from optimize.candidates import BUILDERS, Workspace, not_applicable
from optimize.litert_candidates import CandidateSkipped
from optimize.export import OPSET, describe_dynamic_axes, dynamic_shapes, example_tensors, export_checked, exporter_name
from optimize.kind import Built, Program
from optimize.manifest import Measurement, Step
from optimize.selection import AccuracyProblem
from optimize.settings import OptimizeSettings
from optimize.source import ModelSource


# Candidates whose builders take one input array: fine-tuning (optimize/train.py) and PyTorch FX quantization.
SINGLE_INPUT_CANDIDATES = ("pruned", "pruned_int8_static", "sparse", "distilled", "torch_int8_static")


def several_inputs_unsupported(name: str, source: ModelSource) -> str | None:
    if source.several_inputs and name in SINGLE_INPUT_CANDIDATES:
        return (f"its fine-tuning or quantization takes one input array, and this model has "
                f"{len(source.input_names)} ({', '.join(source.input_names)})")
    return None


def score_drop_criterion(settings: OptimizeSettings, metric: str) -> AccuracyProblem:
    """A candidate fails if its score drops below fp32's by more than `accuracy_tolerance` (absolute, or a
    fraction of fp32's score with `accuracy_tolerance_relative`)."""
    def problem(measured: Measurement, baseline: Measurement) -> tuple[str | None, str]:
        drop = baseline.accuracy - measured.accuracy
        allowed = settings.accuracy_tolerance
        tolerance = f"{allowed}"
        if settings.accuracy_tolerance_relative:
            allowed *= abs(baseline.accuracy)
            tolerance = f"{allowed:.4f} ({settings.accuracy_tolerance:.2%} of fp32's {baseline.accuracy:.4f})"
        if drop > allowed:
            return f"{metric} drop {drop:.4f} exceeds tolerance {tolerance}", ""
        if -drop > allowed:  # e.g. an undertrained model fine-tuned after pruning: the compression did not do this
            return None, (f"{metric} rose {-drop:.4f} above fp32's, beyond the tolerance {tolerance}: fine-tuning, "
                          "not compression, changed accuracy, so these weights are not the user's")
        return None, f"{metric} drop {drop:.4f} within {tolerance}"

    return problem


class Classifier:
    """The classifier kind of optimize.kind.Kind."""

    def __init__(self, source: ModelSource, settings: OptimizeSettings, log: Callable[[str], None]) -> None:
        self.source, self.settings, self.log = source, settings, log
        self.metric = "top1" if source.metric is None else source.metric_name  # what the manifest says it judged
        self.prior_steps = source.prior_steps
        self.accuracy_problem = score_drop_criterion(settings, source.metric_name)
        self._feed = measure.resized_feed(source.validation_feed)

    def export_fp32(self, work: Path) -> Built:
        source, tolerance = self.source, self.settings.parity_tolerance
        difference = export_checked(source, work / "fp32.onnx", tolerance)
        reference = "PyTorch" if source.model_format != "onnx" else "the given ONNX file"
        self.log(f"ONNX vs {reference} on {len(source.validation_labels)} held-out inputs: max abs diff "
                 f"{difference:.2e} (tolerance {tolerance:.0e})")
        return Built(work / "fp32.onnx", [Step(name="export_onnx", settings={
            "exporter": exporter_name(source), "opset": OPSET, "dynamic_axes": describe_dynamic_axes(source),
            "parity_max_abs_diff": difference, "parity_tolerance": tolerance,
        })])

    def build_candidates(self, fp32: Built, work: Path) -> dict[str, Built]:
        workspace = Workspace(self.source, fp32, work, self.settings, self.log)
        for name in self.settings.planned_candidates:
            reason = several_inputs_unsupported(name, self.source) or not_applicable(name, self.source)
            if reason is not None:
                self.log(f"{name}: skipped, {reason}")
                continue
            self.log(f"{name}: building")
            try:
                workspace.built[name] = BUILDERS[name](workspace)
            except CandidateSkipped as why:
                self.log(f"{name}: skipped, {why}")
        return workspace.built

    def open(self, path: Path):
        """An onnxruntime session, or for a TorchScript or LiteRT candidate an adapter with the same API, which
        answers to the fp32 export's input and output names."""
        threads = self.settings.timing_threads
        if path.suffix not in (".pt", ".tflite"):
            return measure.open_session(path, threads)
        source = self.source
        fp32 = measure.open_session(path.with_name("fp32.onnx"))
        if path.suffix == ".tflite":
            from optimize.tflite_session import TFLiteSession

            return TFLiteSession(path, threads, input_names=[source.input_name],
                                 output_names=[output.name for output in fp32.get_outputs()])
        from optimize.torch_quantize import TorchScriptSession

        classes = int(measure.run(fp32, source.example_input[:1]).shape[1])  # one input: torch_int8_static
        return TorchScriptSession(path, source.input_name, source.output_name, source.example_input.shape[1:], classes)

    def feed(self, batch_size: int) -> dict[str, np.ndarray]:
        return self._feed(batch_size)

    def score(self, session) -> tuple[float, None]:
        return self.source.score(measure.run(session, self.source.validation_feed)), None

    def batch_deviation(self, session) -> float:
        return measure.batch_deviation(session, self.source.validation_feed, max(self.settings.batch_sizes))

    def program(self) -> Program:
        """The PyTorch module (fp32; the server casts under autocast) with a dynamic batch axis."""
        import torch

        if self.source.model_format != "pytorch":
            got = "an ONNX file" if self.source.model_format == "onnx" else "a TorchScript module"
            raise ValueError(f"gpu_runtime torch: expected a PyTorch nn.Module to export with torch.export, got {got}")
        return Program(self.source.module, example_tensors(self.source), dynamic_shapes(self.source))

    def finish(self, fp32: Built, out_dir: Path) -> Extras:
        """GPU target with the ONNX runtime: a TensorRT engine from the fp32 export, where TensorRT and a GPU are."""
        s = self.settings
        if s.target != "gpu" or s.gpu_runtime != "onnxruntime" or not s.tensorrt_engine:
            return Extras()
        from optimize.tensorrt_build import ENGINE_FILE, build_engine, engine_unavailable

        reason = engine_unavailable() or ("the engine builder takes one input" if self.source.several_inputs else None)
        if reason is not None:
            self.log(f"TensorRT engine: not built, {reason}; the fp16 ONNX model serves on onnxruntime's CUDA or "
                     "TensorRT provider")
            return Extras()
        engine, step = build_engine(fp32.path, self.source.input_name, self.source.calibration,
                                    s.serving_max_batch_size, out_dir, self.log)
        return Extras(steps=(step,), tensorrt=engine, files=(ENGINE_FILE,))
