"""GPU-target artifacts loaded by the server: fp16 ONNX and torch.export programs, on CPU here and
on CUDA where a GPU is present (those tests skip with the reason otherwise)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from optimize import measure
from optimize.export import export_onnx
from optimize.manifest import load_verified
from optimize.pipeline import optimize_model
from optimize.settings import OptimizeSettings
from serve.runtimes.model import OnnxModel, load_model
from serve.settings import ServeSettings


@pytest.fixture(scope="module")
def fp32_onnx(digits_source, tmp_path_factory):
    path = tmp_path_factory.mktemp("fp32") / "fp32.onnx"
    export_onnx(digits_source, path)
    return path


@pytest.fixture(scope="module")
def fp16_artifact(digits_source, tmp_path_factory):
    artifact = tmp_path_factory.mktemp("artifacts") / "digits-fp16"
    optimize_model(digits_source, artifact, OptimizeSettings(target="gpu", latency_repeats=10))
    return artifact


@pytest.fixture(scope="module")
def program_artifact(digits_source, tmp_path_factory):
    artifact = tmp_path_factory.mktemp("artifacts") / "digits-program"
    optimize_model(digits_source, artifact, OptimizeSettings(target="gpu", gpu_runtime="torch", latency_repeats=10))
    return artifact


def _top1(model, inputs, labels) -> float:
    return measure.top1_accuracy(model.run({"input": inputs})["logits"], labels)


def test_fp16_artifact_serves_fp32_requests_with_fp32_top1(fp16_artifact, fp32_onnx, digits_source):
    model = load_model(fp16_artifact)
    inputs, labels = digits_source.validation_inputs, digits_source.validation_labels
    reference = measure.top1_accuracy(measure.run(measure.open_session(fp32_onnx), inputs), labels)
    assert abs(_top1(model, inputs, labels) - reference) <= 0.01
    assert model.execution_provider in ort.get_available_providers()


def test_program_artifact_matches_the_onnx_export_on_cpu(program_artifact, fp32_onnx, digits_source):
    model = load_model(program_artifact, settings=ServeSettings(torch_dtype="float32"))
    assert model.manifest.runtime == "torch_export" and model.manifest.model_file == "model.pt2"
    inputs = digits_source.validation_inputs[:64]
    expected = measure.run(measure.open_session(fp32_onnx), inputs)
    if not model.execution_provider.startswith("torch:cpu"):
        pytest.skip(f"this machine runs it on {model.execution_provider}; the CPU comparison is for CPU machines")
    np.testing.assert_allclose(model.run({"input": inputs})["logits"], expected, atol=1e-4)
    assert model.run({"input": inputs[:1]})["logits"].shape == (1, 10)  # dynamic batch survives export


def test_program_runs_on_cuda_in_half_precision_close_to_cpu(program_artifact, fp32_onnx, digits_source):
    torch = pytest.importorskip("torch", reason="the torch runtime needs PyTorch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here (torch.cuda.is_available() is False): the fp16 CUDA path of the torch "
                    "runtime is checked by scripts/gpu_check.sh on a GPU machine")
    model = load_model(program_artifact, settings=ServeSettings(torch_dtype="float16"))
    assert model.execution_provider.startswith("torch:cuda")
    inputs, labels = digits_source.validation_inputs, digits_source.validation_labels
    outputs = model.run({"input": inputs})["logits"]
    assert outputs.dtype == np.float32
    reference = measure.top1_accuracy(measure.run(measure.open_session(fp32_onnx), inputs), labels)
    assert abs(measure.top1_accuracy(outputs, labels) - reference) <= 0.01  # fp16 vs fp32, not where training landed


def test_fp16_artifact_runs_on_a_gpu_provider_where_one_is_present(fp16_artifact):
    gpu = [p for p in ort.get_available_providers() if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    if not gpu:
        pytest.skip(f"onnxruntime here offers {ort.get_available_providers()}: no CUDA or TensorRT provider "
                    "(install onnxruntime-gpu on a GPU machine)")
    model = OnnxModel(fp16_artifact, load_verified(fp16_artifact)[0])
    assert model.execution_provider in gpu


def test_cuda_graph_replay_answers_like_op_by_op_at_any_batch_size(program_artifact, digits_source):
    torch = pytest.importorskip("torch", reason="the torch runtime needs PyTorch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here (torch.cuda.is_available() is False): CUDA graph replay is checked on a GPU "
                    "machine by this test and scripts/gpu_check.sh")
    graphed = load_model(program_artifact, settings=ServeSettings(torch_cuda_graphs=True))
    op_by_op = load_model(program_artifact, settings=ServeSettings(torch_cuda_graphs=False))
    assert "CUDA graphs" in graphed.execution_provider and "CUDA graphs" not in op_by_op.execution_provider
    inputs = digits_source.validation_inputs
    for rows in (1, 3, 64, 100, 3, 1):
        replayed, expected = (model.run({"input": inputs[:rows]})["logits"] for model in (graphed, op_by_op))
        assert replayed.shape == (rows, 10)
        np.testing.assert_allclose(replayed, expected, atol=2e-2)
        assert (replayed.argmax(1) == expected.argmax(1)).all()
    assert graphed._graphed.captured == 4  # rows padded to 1, 4, 64 and 128; repeats replay their graph
