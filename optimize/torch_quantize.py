"""PyTorch's own static post-training quantization, shipped as TorchScript.

FX graph mode (`prepare_fx`, calibrate, `convert_fx`) with the default qconfig
of a backend: `x86`/`fbgemm` for Intel/AMD CPUs, `qnnpack` for ARM. The
quantized module is traced to TorchScript, which the server loads with
`torch.jit.load` (no pickle). `TorchScriptSession` lets the optimizer time and
score it exactly like an onnxruntime session.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimize.manifest import Step

BACKENDS = ("x86", "fbgemm", "qnnpack")
CALIBRATION_BATCH = 32


def quantize_torch_static(module, calibration: np.ndarray, backend: str, path: Path) -> Step:
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    from tqdm.auto import tqdm

    if backend not in BACKENDS:
        raise ValueError(f"torch quantization backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    torch.backends.quantized.engine = "x86" if backend == "x86" else backend
    example = torch.from_numpy(calibration[:CALIBRATION_BATCH])
    prepared = prepare_fx(copy.deepcopy(module).eval(), get_default_qconfig_mapping(backend), (example,))
    batches = range(0, len(calibration), CALIBRATION_BATCH)
    with torch.no_grad():
        for start in tqdm(batches, desc=f"calibrating (torch {backend})", unit="batch", leave=False):
            prepared(torch.from_numpy(calibration[start : start + CALIBRATION_BATCH]))
        scripted = torch.jit.trace(convert_fx(prepared), example)
    torch.jit.save(scripted, str(path))
    return Step(name="quantize_torch_static", settings={
        "api": "torch.ao.quantization FX graph mode (prepare_fx, convert_fx)", "backend": backend,
        "qconfig": f"get_default_qconfig_mapping({backend!r})", "calibration_batches": len(batches),
        "format": "TorchScript (torch.jit.trace)",
    })


@dataclass(frozen=True)
class NodeInfo:
    name: str
    type: str
    shape: list


class TorchScriptSession:
    """The slice of onnxruntime's InferenceSession API the optimizer uses, over a TorchScript classifier."""

    def __init__(self, path: Path, input_name: str, output_name: str, features: tuple[int, ...], classes: int):
        import torch

        self._module = torch.jit.load(str(path), map_location="cpu").eval()
        self._input = NodeInfo(input_name, "tensor(float)", ["batch", *features])
        self._output = NodeInfo(output_name, "tensor(float)", ["batch", classes])

    def run(self, _names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.no_grad():
            return [self._module(torch.from_numpy(np.ascontiguousarray(feed[self._input.name]))).numpy()]

    def get_inputs(self) -> list[NodeInfo]:
        return [self._input]

    def get_outputs(self) -> list[NodeInfo]:
        return [self._output]
