"""Which device runs an artifact: pure choices from what is installed and present.

A GPU-target artifact runs on onnxruntime's TensorRT, then CUDA, then CPU
execution provider, by what this onnxruntime build offers, whether TensorRT's
libraries are installed, and whether a GPU is present. CPU-target artifacts
(int8 kernels) stay on the CPU. Nothing here imports a GPU library.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from optimize.manifest import TensorSpec

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PREFERENCE = (TENSORRT, CUDA, CPU)


def choose_providers(target: str, available: list[str], gpu_present: bool, tensorrt_installed: bool) -> list[str]:
    """Execution providers in the order onnxruntime should try them; CPU is always last."""
    if target != "gpu" or not gpu_present:
        return [CPU]
    usable = {CUDA} | ({TENSORRT} if tensorrt_installed else set())
    return [p for p in PREFERENCE if p in available and p in usable] + [CPU]


def gpu_present() -> bool:
    """An NVIDIA GPU this process may use: the driver lists one and CUDA_VISIBLE_DEVICES does not hide it."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def tensorrt_installed() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def replica_gpus(target: str, configured: float | None, present: bool) -> float:
    """GPUs a replica asks Ray for: as configured, else 1 for a GPU artifact where a GPU is present, else 0."""
    if configured is not None:
        return configured if target == "gpu" else 0.0
    return 1.0 if target == "gpu" and present else 0.0


def tensorrt_profile(inputs: tuple[TensorSpec, ...], max_batch: int, max_length: int | None) -> dict[str, str]:
    """onnxruntime TensorRT provider options for one optimization profile: batch 1..max_batch; other
    dynamic axes (token sequences) 1..max_length."""
    def shape(spec: TensorSpec, batch: int, other: int) -> str:
        dims = [batch if axis == 0 else (other if d == -1 else d) for axis, d in enumerate(spec.shape)]
        return f"{spec.name}:{'x'.join(map(str, dims))}"

    longest = max_length or 1
    return {
        "trt_profile_min_shapes": ",".join(shape(s, 1, 1) for s in inputs),
        "trt_profile_opt_shapes": ",".join(shape(s, max_batch, longest) for s in inputs),
        "trt_profile_max_shapes": ",".join(shape(s, max_batch, longest) for s in inputs),
    }
