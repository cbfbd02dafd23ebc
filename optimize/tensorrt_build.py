"""A TensorRT engine for GPU-target artifacts, built where TensorRT and a CUDA GPU are present.

The fp32 ONNX model is parsed, and the engine is built with fp16 and int8
enabled (TensorRT picks each layer's precision), one optimization profile
covering batch 1 to the serving maximum, INT8 calibration (entropy
calibrator 2, calibration cache written beside the engine) and a timing
cache. The manifest records the TensorRT version, GPU name and compute
capability: engines load only where those match (optimize.manifest.check_engine).

TensorRT and torch (device buffers for calibration) are imported only here,
only when a GPU target asks for an engine. Untested on hardware until
scripts/gpu_check.sh has run on a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from optimize.manifest import Step, TensorRTEngine, sha256_of

ENGINE_FILE, CALIBRATION_FILE, TIMING_FILE = "model.engine", "calibration.cache", "timing.cache"
WORKSPACE_BYTES = 4 << 30


def engine_unavailable() -> str | None:
    """Why no engine can be built here (None when TensorRT and a CUDA GPU are both present)."""
    try:
        import tensorrt  # noqa: F401
        import torch
    except ImportError as error:
        return f"needs the tensorrt and torch packages ({error.name} is not installed)"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (torch.cuda.is_available() is False)"
    return None


def gpu_identity() -> tuple[str, str, str]:
    """(TensorRT version, GPU name, compute capability 'major.minor') of this machine's first GPU."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return trt.__version__, torch.cuda.get_device_name(0), f"{major}.{minor}"


def build_engine(onnx_path: Path, input_name: str, calibration: np.ndarray, max_batch: int, out_dir: Path,
                 log: Callable[[str], None] = print) -> tuple[TensorRTEngine, Step]:
    """Build and write model.engine, calibration.cache and timing.cache into `out_dir`."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    _parse(trt.OnnxParser(network, logger), onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    features = tuple(calibration.shape[1:])
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (1, *features), (max_batch, *features), (max_batch, *features))
    config.add_optimization_profile(profile)
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.INT8)
    config.set_calibration_profile(profile)
    calibrator = _calibrator(trt, calibration, max_batch, out_dir / CALIBRATION_FILE)
    config.int8_calibrator = calibrator
    timing = config.create_timing_cache(b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    log(f"TensorRT {trt.__version__}: building an fp16+int8 engine for batch 1..{max_batch}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path.name}; see its log above")
    (out_dir / ENGINE_FILE).write_bytes(bytes(serialized))
    (out_dir / TIMING_FILE).write_bytes(bytes(timing.serialize()))
    version, gpu, capability = gpu_identity()
    engine = TensorRTEngine(
        engine_sha256=sha256_of(out_dir / ENGINE_FILE), tensorrt_version=version, gpu_name=gpu,
        compute_capability=capability, precisions=("fp16", "int8"), opt_batch=max_batch, max_batch=max_batch,
    )
    step = Step(name="build_tensorrt_engine", settings={
        "tensorrt": version, "gpu": gpu, "compute_capability": capability, "flags": "FP16, INT8",
        "calibrator": "IInt8EntropyCalibrator2", "profile": f"batch 1..{max_batch} (opt {max_batch})",
        "calibration_batches": calibrator.batches_served,
    })
    return engine, step


def _parse(parser, onnx_path: Path) -> None:
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser refused {onnx_path.name}: {errors}")


def _calibrator(trt, data: np.ndarray, batch: int, cache: Path):
    """An entropy calibrator over `data` in batches of `batch` rows (the profile's opt shape)."""
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            rows = max(batch, len(data) // batch * batch)
            self._data = np.resize(data, (rows, *data.shape[1:])).astype(np.float32)
            self._device = torch.empty((batch, *data.shape[1:]), dtype=torch.float32, device="cuda")
            self.batches_served = 0

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names) -> list[int] | None:
            start = self.batches_served * batch
            if start >= len(self._data):
                return None
            self._device.copy_(torch.from_numpy(self._data[start : start + batch]))
            self.batches_served += 1
            return [int(self._device.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, contents) -> None:
            cache.write_bytes(bytes(contents))

    return EntropyCalibrator()
