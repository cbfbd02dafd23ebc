"""GPU-target optimization on the CPU: fp16 conversion of the real digits MLP, judging, choosing, settings."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from optimize import measure
from optimize.export import export_onnx
from optimize.gpu import convert_fp16
from optimize.manifest import Candidate, load_verified
from optimize.pipeline import optimize_model
from optimize.settings import OptimizeSettings


@pytest.fixture(scope="module")
def fp32_and_fp16(digits_source, tmp_path_factory):
    work = tmp_path_factory.mktemp("fp16")
    export_onnx(digits_source, work / "fp32.onnx")
    step = convert_fp16(work / "fp32.onnx", work / "fp16.onnx")
    return work / "fp32.onnx", work / "fp16.onnx", step


def test_fp16_keeps_fp32_inputs_and_outputs_and_halves_the_weights(fp32_and_fp16):
    fp32, fp16, step = fp32_and_fp16
    session = ort.InferenceSession(str(fp16), providers=["CPUExecutionProvider"])
    assert [node.type for node in (*session.get_inputs(), *session.get_outputs())] == ["tensor(float)"] * 2
    weights = onnx.load(str(fp16)).graph.initializer
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights if len(w.dims) == 2)
    assert fp16.stat().st_size < 0.6 * fp32.stat().st_size
    assert step.name == "convert_fp16" and step.settings["keep_io_types"] is True


def test_fp16_keeps_top1_within_tolerance_of_fp32(fp32_and_fp16, digits_source):
    fp32, fp16, _ = fp32_and_fp16
    inputs, labels = digits_source.validation_inputs, digits_source.validation_labels
    full = measure.run(measure.open_session(fp32), inputs)
    half = measure.run(measure.open_session(fp16), inputs)
    assert half.dtype == np.float32
    assert abs(measure.top1_accuracy(full, labels) - measure.top1_accuracy(half, labels)) <= 0.01
    assert np.max(np.abs(full - half)) < 0.05  # fp16 rounding, not a different model


def test_auto_on_cpu_never_builds_fp16_and_gpu_target_defaults_to_it():
    assert "fp16" not in OptimizeSettings(auto=True).planned_candidates
    assert OptimizeSettings(target="gpu").planned_candidates == ("fp16",)
    assert OptimizeSettings(target="gpu", auto=True).planned_candidates == ("fp16",)
    assert OptimizeSettings(target="gpu", gpu_runtime="torch").planned_candidates == ()


def test_gpu_target_refuses_cpu_kernel_candidates_saying_which():
    with pytest.raises(ValueError, match="target gpu: int8_static run on CPU kernels; expected GPU-capable"):
        OptimizeSettings(target="gpu", candidates=("int8_static",))


def test_gpu_pipeline_writes_an_fp16_artifact_that_says_its_target(digits_source, tmp_path):
    manifest = optimize_model(digits_source, tmp_path, OptimizeSettings(target="gpu", latency_repeats=10))
    assert (manifest.target, manifest.runtime, manifest.tensorrt) == ("gpu", "onnxruntime", None)
    assert [s.name for s in manifest.steps][-1] == "convert_fp16"
    assert [spec.datatype for spec in (*manifest.inputs, *manifest.outputs)] == ["FP32", "FP32"]
    assert manifest.before.accuracy - manifest.after.accuracy <= 0.01
    assert load_verified(tmp_path)[0] == manifest
    assert isinstance(manifest.candidates[1], Candidate) and manifest.candidates[1].name == "fp16"
