"""GPU-target variants: fp16 ONNX, and torch.export programs for the PyTorch runtime.

fp16: onnxruntime's converter rewrites float tensors to float16 and, with
`keep_io_types`, adds Casts at the edges so clients still send and receive
FP32. It is a GPU artifact: onnxruntime's CPU kernels run most of it through
casts, so its CPU latency says nothing about GPU speed (tensor cores) and is
never used to choose it; its accuracy against fp32 is measured on the CPU.

torch.export program: the PyTorch module as an ExportedProgram (`.pt2`,
`torch.export.save`), with a dynamic batch axis. The server runs it on CUDA
under fp16/bf16 autocast (serve/runtimes/torch_model.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from optimize.manifest import Step

PROGRAM_FILE = "model.pt2"


def fp16_converter() -> tuple[Callable, str]:
    """The float16 converter this environment has: onnxruntime's own, else onnxconverter-common's."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return convert_float_to_float16, "onnxruntime.transformers.float16.convert_float_to_float16"
    except ImportError:
        try:
            from onnxconverter_common.float16 import convert_float_to_float16
        except ImportError:
            raise RuntimeError("fp16 conversion: expected onnxruntime.transformers (onnxruntime) or "
                               "onnxconverter-common to be installed; neither is") from None
        return convert_float_to_float16, "onnxconverter_common.float16.convert_float_to_float16"


def convert_fp16(source: Path, target: Path) -> Step:
    """Write an fp16 copy of the ONNX model at `source` to `target`, keeping FP32 inputs and outputs."""
    import onnx

    convert, api = fp16_converter()
    model = onnx.load(str(source))
    onnx.save(convert(model, keep_io_types=True), str(target))
    return Step(name="convert_fp16", settings={
        "api": api, "keep_io_types": True,
        "note": "a GPU-target variant: clients send FP32; CPU latency is not a measure of its speed",
    })


def export_program(module, example_inputs: tuple, dynamic_shapes: tuple, path: Path) -> Step:
    """Save `module` as a torch.export program with the given dynamic axes."""
    import torch

    with torch.no_grad():
        program = torch.export.export(module.eval(), example_inputs, dynamic_shapes=dynamic_shapes)
    torch.export.save(program, str(path))
    return Step(name="export_program", settings={
        "api": "torch.export.export, torch.export.save", "torch": torch.__version__,
        "dynamic_axes": ", ".join(sorted({name for shape in dynamic_shapes for name in _dim_names(shape)})),
        "serving": "PyTorch on CUDA under fp16/bf16 autocast (OPTISERVE_TORCH_DTYPE), fp32 on the CPU",
    })


def _dim_names(shape: dict) -> list[str]:
    return [getattr(dim, "__name__", str(dim)) for dim in shape.values()]


def gpu_choice(candidates) -> str:
    """GPU target: the first accepted variant other than fp32 (fp16), else fp32; CPU latency plays no part."""
    for candidate in candidates:
        if candidate.accepted and candidate.name != "fp32":
            return candidate.name
    return "fp32"
