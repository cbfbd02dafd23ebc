"""Execution-provider choice, GPU requests and TensorRT profiles as pure functions."""

from __future__ import annotations

import pytest

from optimize.manifest import TensorSpec
from serve.runtimes.providers import CPU, CUDA, TENSORRT, choose_providers, gpu_present, replica_gpus, tensorrt_profile
from serve.runtimes.torch_model import torch_device

GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize("available, present, trt, expected", [
    (GPU_BUILD, True, True, [TENSORRT, CUDA, CPU]),
    (GPU_BUILD, True, False, [CUDA, CPU]),  # onnxruntime-gpu lists TensorRT even where its libraries are absent
    (GPU_BUILD, False, True, [CPU]),  # installed, but no GPU present
    (["CUDAExecutionProvider", "CPUExecutionProvider"], True, True, [CUDA, CPU]),
    (["AzureExecutionProvider", "CPUExecutionProvider"], True, True, [CPU]),  # the CPU wheel
])
def test_gpu_artifacts_prefer_tensorrt_then_cuda_then_cpu(available, present, trt, expected):
    assert choose_providers("gpu", available, present, trt) == expected


def test_cpu_artifacts_stay_on_the_cpu_even_beside_a_gpu():
    assert choose_providers("cpu", GPU_BUILD, True, True) == [CPU]


@pytest.mark.parametrize("target, configured, present, expected", [
    ("gpu", None, True, 1.0), ("gpu", None, False, 0.0), ("gpu", 0.5, False, 0.5),
    ("cpu", None, True, 0.0), ("cpu", 1.0, True, 0.0),
])
def test_replicas_ask_ray_for_a_gpu_only_for_gpu_artifacts(target, configured, present, expected):
    assert replica_gpus(target, configured, present) == expected


def test_hidden_gpus_are_not_present(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_present() is False


def test_tensorrt_profile_covers_batch_one_to_the_serving_maximum():
    inputs = (TensorSpec(name="input_ids", datatype="INT64", shape=(-1, -1)),
              TensorSpec(name="attention_mask", datatype="INT64", shape=(-1, -1)))
    profile = tensorrt_profile(inputs, 32, 256)
    assert profile["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1"
    assert profile["trt_profile_max_shapes"] == "input_ids:32x256,attention_mask:32x256"
    image = tensorrt_profile((TensorSpec(name="input", datatype="FP32", shape=(-1, 64)),), 128, None)
    assert image["trt_profile_opt_shapes"] == "input:128x64"


def test_torch_runs_gpu_artifacts_on_cuda_only_where_cuda_is():
    assert torch_device("gpu", True) == "cuda"
    assert torch_device("gpu", False) == "cpu"
    assert torch_device("cpu", True) == "cpu"  # PyTorch int8 kernels are CPU kernels
