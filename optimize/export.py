"""PyTorch to ONNX with a dynamic batch axis, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optimize.source import ModelSource

OPSET = 18


class ParityError(Exception):
    """The exported ONNX model does not compute what the PyTorch model computes."""


def export_onnx(source: ModelSource, path: Path) -> None:
    import torch

    example = torch.from_numpy(source.example_input)
    program = torch.onnx.export(
        source.module,
        (example,),
        input_names=[source.input_name],
        output_names=[source.output_name],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=OPSET,
        dynamo=True,
        verbose=False,
    )
    program.save(str(path))


def torch_outputs(source: ModelSource, inputs: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return source.module(torch.from_numpy(inputs)).numpy()


def check_parity(source: ModelSource, onnx_outputs: np.ndarray, tolerance: float) -> float:
    """Return the max abs difference to PyTorch on the validation inputs; raise above tolerance."""
    expected = torch_outputs(source, source.validation_inputs)
    difference = float(np.max(np.abs(expected - onnx_outputs)))
    if not difference <= tolerance:
        raise ParityError(
            f"ONNX export differs from PyTorch: max abs diff {difference:.3g}, "
            f"expected at most {tolerance:.3g}"
        )
    return difference
