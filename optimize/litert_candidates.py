"""LiteRT candidates: the source as .tflite in fp32, dynamic-range int8 and full-integer int8.

Keras models convert with TensorFlow's own TFLiteConverter (optimize/litert.py),
PyTorch modules with litert-torch and ai-edge-quantizer (optimize/litert_torch.py).
Each file is checked against the source model as it is made; one that cannot
be converted, or computes something else, is skipped with the reason, never
shipped. Those made are timed, scored and checked for batch invariance beside
the onnxruntime candidates, and the fastest that holds accuracy ships.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from optimize.kind import Built

MODES = {"tflite_fp32": "fp32", "tflite_dynamic_int8": "dynamic_int8", "tflite_int8": "full_int8"}


class CandidateSkipped(Exception):
    """A candidate that could not be made for this model; the message says why."""


def tflite_obstacle(source) -> str | None:
    """Why no LiteRT candidate can be made for `source`, or None."""
    if importlib.util.find_spec("ai_edge_litert") is None:
        return "LiteRT needs ai-edge-litert: pip install .[litert]"
    if source.several_inputs:
        return f"LiteRT candidates take one input, and this model has {len(source.input_names)}"
    if getattr(source, "keras_model", None) is not None:
        return None
    if source.model_format != "pytorch":
        got = "an ONNX file" if source.model_format == "onnx" else "a TorchScript module"
        return f"needs a Keras model or a PyTorch nn.Module to convert, got {got}"
    if importlib.util.find_spec("litert_torch") is None:
        return "PyTorch to LiteRT needs litert-torch: pip install .[litert-torch]"
    return None


def build_tflite(ws, name: str) -> Built:
    """Convert the workspace's source in the mode `name` says; CandidateSkipped where that cannot be done: the
    converter or quantizer fails on the model (their errors are many and their own), or the file computes
    something else than the source."""
    source, mode = ws.source, MODES[name]
    path = ws.work / f"{name}.tflite"
    only = source.input_names[0]  # tflite_obstacle let through one input only, given as an array or a dict
    check_inputs, calibration = (source.feed(rows)[only] for rows in (source.validation_inputs, source.calibration))
    try:
        if getattr(source, "keras_model", None) is not None:
            from optimize.litert import keras_to_tflite

            step = keras_to_tflite(source.keras_model, path, mode, check_inputs, calibration)
        else:
            from optimize.litert_torch import torch_to_tflite

            fp32 = ws.built.get("tflite_fp32")  # the int8 modes quantize it rather than convert again
            step = torch_to_tflite(source.module, source.feed(source.example_input)[only][0], path, mode,
                                   check_inputs, calibration, ws.settings.serving_batch_sizes,
                                   converted_fp32=fp32.path if fp32 is not None and mode != "fp32" else None)
    except ImportError:
        raise
    except Exception as error:  # noqa: BLE001 - ParityError, LiteRTConversionError, and the libraries' own
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise CandidateSkipped(f"{type(error).__name__}: {first_line}") from error
    return Built(path, [step])
