import numpy as np
import onnxruntime as ort
import pytest

from optimize.export import ParityError, check_parity, torch_outputs
from optimize.manifest import load_verified
from optimize.settings import OptimizeSettings


def test_artifact_describes_inputs_outputs_and_dynamic_batch(digits_artifact):
    manifest, _ = load_verified(digits_artifact)
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [("input", "FP32", (-1, 64))]
    assert [(t.name, t.datatype, t.shape) for t in manifest.outputs] == [("logits", "FP32", (-1, 10))]
    assert {"torch", "onnx", "onnxruntime", "python"} <= set(manifest.tool_versions)


def test_exported_model_matches_pytorch_within_the_recorded_tolerance(digits_artifact, digits_source):
    manifest, model_path = load_verified(digits_artifact)
    export = next(step for step in manifest.steps if step.name == "export_onnx")
    assert export.settings["parity_max_abs_diff"] <= export.settings["parity_tolerance"]
    if len(manifest.steps) == 1:  # fp32 shipped: it must still match PyTorch on new batch sizes
        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        inputs = digits_source.validation_inputs[:3]
        onnx_out = session.run(None, {"input": inputs})[0]
        np.testing.assert_allclose(onnx_out, torch_outputs(digits_source, inputs), atol=1e-4)


def test_recorded_accuracy_is_what_the_shipped_model_scores(digits_artifact, digits_source):
    manifest, model_path = load_verified(digits_artifact)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": digits_source.validation_inputs})[0]
    accuracy = float(np.mean(logits.argmax(axis=1) == digits_source.validation_labels))
    assert accuracy == pytest.approx(manifest.after.accuracy)
    assert manifest.before.accuracy > 0.9  # a real classifier, not chance (0.1): a wide margin, it scores ~0.98
    assert manifest.before.accuracy - manifest.after.accuracy <= OptimizeSettings().accuracy_tolerance


def test_manifest_records_both_candidates_and_the_choice(digits_artifact):
    manifest, _ = load_verified(digits_artifact)
    names = [c.name for c in manifest.candidates]
    assert names == ["fp32", "int8_dynamic"]
    int8 = manifest.candidates[1]
    shipped_int8 = any(step.name == "quantize_int8_dynamic" for step in manifest.steps)
    assert shipped_int8 == int8.accepted
    assert int8.measurement.size_bytes < manifest.candidates[0].measurement.size_bytes


def test_parity_check_fails_loudly_above_tolerance(digits_source):
    outputs = torch_outputs(digits_source, digits_source.validation_inputs) + 1e-3
    with pytest.raises(ParityError, match="max abs diff .* expected at most"):
        check_parity(digits_source, outputs, tolerance=1e-4)


def negative_log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(log_probs[np.arange(len(labels)), labels].mean())


def test_a_user_metric_judges_the_candidates_and_is_recorded(digits_source, tmp_path):
    from dataclasses import replace

    from optimize.pipeline import optimize_model

    source = replace(digits_source, metric=negative_log_loss)
    manifest = optimize_model(source, tmp_path / "digits", OptimizeSettings(
        latency_repeats=10, accuracy_tolerance=0.05, accuracy_tolerance_relative=True))
    session = ort.InferenceSession(str(tmp_path / "digits" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": digits_source.validation_inputs})[0]
    assert manifest.after.accuracy == pytest.approx(negative_log_loss(logits, digits_source.validation_labels))
    assert manifest.before.accuracy < 0  # a log likelihood, not a top-1 fraction
    assert manifest.metric == "negative_log_loss"
    assert all(c.reason.startswith("negative_log_loss drop") for c in manifest.candidates if c.name != "fp32")


def test_a_metric_that_returns_nan_is_refused_by_name(digits_source):
    from dataclasses import replace

    source = replace(digits_source, metric=lambda outputs, labels: float("nan"))
    with pytest.raises(ValueError, match="must return a finite number"):
        source.score(np.zeros((3, 10), dtype=np.float32))
