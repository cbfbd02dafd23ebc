"""PyTorch to ONNX with a dynamic batch axis, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optimize import measure
from optimize.feeds import Inputs
from optimize.source import ModelSource

OPSET = 18
EXPORTERS = {  # how each model format becomes ONNX, as the manifest's export step records it
    "pytorch": "torch.onnx.export(dynamo=True)",
    "torchscript": "torch.onnx.export(dynamo=False), TorchScript input",  # torch.export cannot trace TorchScript
    "onnx": "none: the ONNX file {name} as given",
}


class ParityError(Exception):
    """The exported ONNX model does not compute what the PyTorch model computes."""


def exporter_name(source: ModelSource) -> str:
    return EXPORTERS[source.model_format].format(name=source.onnx_file.name if source.onnx_file else "")


def export_checked(source: ModelSource, path: Path, tolerance: float) -> float:
    """Export to `path`, run it on the validation inputs; return the max abs difference to the source's
    own outputs, raising ParityError above `tolerance`."""
    export_onnx(source, path)
    outputs = measure.run(measure.open_session(path), source.validation_feed)
    return check_parity(source, outputs, tolerance)


def example_tensors(source: ModelSource) -> tuple:
    """The example inputs as torch tensors, in the order the module's forward takes them."""
    import torch

    return tuple(torch.from_numpy(array) for array in source.feed(source.example_input).values())


def _axes(source: ModelSource) -> dict[str, dict[int, str]]:
    """Every input's dynamic axes by name: axis 0 is the batch, the rest as the source declares."""
    declared = source.dynamic_axes or {}
    return {name: {0: "batch", **declared.get(name, {})} for name in source.input_names}


def dynamic_shapes(source: ModelSource) -> tuple:
    """torch.export's dynamic shapes, one dict per input; an axis name shared by inputs is one Dim."""
    import torch

    dims: dict[str, object] = {}
    return tuple({axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in axes.items()}
                 for axes in _axes(source).values())


def describe_dynamic_axes(source: ModelSource) -> str:
    axes = _axes(source)
    if list(axes.values()) == [{0: "batch"}]:
        return "batch (axis 0)"
    return "; ".join(f"{name}: " + ", ".join(f"{label} (axis {axis})" for axis, label in by_axis.items())
                     for name, by_axis in axes.items())


def export_onnx(source: ModelSource, path: Path) -> None:
    """nn.Module through the dynamo exporter; TorchScript through the TorchScript-based exporter; an
    ONNX file as it is."""
    import shutil

    import torch

    if source.model_format == "onnx":
        shutil.copyfile(source.onnx_file, path)
        return
    names = list(source.input_names)
    if source.model_format == "torchscript":
        torch.onnx.export(
            source.module, example_tensors(source), str(path), input_names=names,
            output_names=[source.output_name], dynamic_axes=_axes(source), opset_version=OPSET, dynamo=False,
        )
        return
    program = torch.onnx.export(
        source.module,
        example_tensors(source),
        input_names=names,
        output_names=[source.output_name],
        dynamic_shapes=dynamic_shapes(source),
        opset_version=OPSET,
        dynamo=True,
        verbose=False,
    )
    program.save(str(path))


def torch_outputs(source: ModelSource, inputs: Inputs) -> np.ndarray:
    inputs = source.feed(inputs)
    if source.model_format == "onnx":  # an ONNX file: itself is the reference
        import onnxruntime as ort

        session = ort.InferenceSession(str(source.onnx_file), providers=["CPUExecutionProvider"])
        return session.run(None, inputs)[0]
    import torch

    with torch.no_grad():  # not inference_mode: TorchScript modules refuse inference tensors
        return source.module(*(torch.from_numpy(array) for array in inputs.values())).numpy()


def check_parity(source: ModelSource, onnx_outputs: np.ndarray, tolerance: float) -> float:
    """Return the max abs difference to PyTorch on the validation inputs; raise above tolerance."""
    expected = torch_outputs(source, source.validation_feed)
    difference = float(np.max(np.abs(expected - onnx_outputs)))
    if not difference <= tolerance:
        raise ParityError(
            f"ONNX export differs from PyTorch: max abs diff {difference:.3g}, "
            f"expected at most {tolerance:.3g}"
        )
    return difference


def export_token_model(module, example: dict[str, np.ndarray], path: Path, output_name: str) -> None:
    """Export a (token ids, mask) -> output module with dynamic batch and sequence axes.

    The dynamo exporter names values after their ops and can hand the name
    asked for to an internal value too (a Gather named "embedding"), so the
    output is renamed afterwards, moving any internal value out of the way.
    """
    import onnx
    import torch

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=512)
    program = torch.onnx.export(
        module, tuple(torch.from_numpy(array) for array in example.values()),
        input_names=list(example), dynamic_shapes=tuple({0: batch, 1: sequence} for _ in example),
        opset_version=OPSET, dynamo=True, verbose=False,
    )
    program.save(str(path))
    model = onnx.load(str(path))
    _rename_value(model, output_name, f"{output_name}_internal")
    _rename_value(model, model.graph.output[0].name, output_name)
    onnx.save(model, str(path))


def _rename_value(model, old: str, new: str) -> None:
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in (*model.graph.output, *model.graph.value_info):
        if value.name == old:
            value.name = new
