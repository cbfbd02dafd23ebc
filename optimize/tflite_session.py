"""A .tflite model behind the slice of onnxruntime's InferenceSession API the optimizer uses.

`TFLiteSession` runs on LiteRT (`ai_edge_litert`, the XNNPACK delegate by
default), the runtime the server uses, so the optimizer times what will serve.
A .tflite file comes in one of two shapes:

- one signature whose input has a dynamic batch axis (TFLiteConverter from
  Keras): the input is resized when the batch shape changes, and only then;
- signatures `batch_<N>` of fixed batch sizes (litert-torch, which exports no
  dynamic batch axis): a batch runs in the smallest N that holds it, padded
  with zero rows; a larger one in chunks of the largest N.

Resizing measured faster than fixed signatures where both are possible (a
digits MLP at mixed sizes 1..32: 13.7 vs 20.4 us a call, AMD EPYC), so the
Keras path keeps the dynamic axis. Integer inputs and outputs (ai-edge-quantizer's
full-integer recipe) are quantized and dequantized here: callers feed float32
and get float32, like the fp32 model. Names default to the file's tensor names;
the optimizer passes the fp32 ONNX export's, so every engine answers to the same.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ONNX_TYPE_NAMES = {"float32": "float", "float64": "double", "int64": "int64", "int32": "int32"}
QUANTIZED = (np.dtype(np.int8), np.dtype(np.uint8))  # integer tensors read with scale and zero point, as served
SIGNATURE = re.compile(r"^batch_([1-9][0-9]*)$")  # as serve/runtimes/litert_model.py reads them


@dataclass(frozen=True)
class NodeInfo:
    name: str
    type: str
    shape: list


def import_interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ImportError("LiteRT candidates need ai-edge-litert: pip install .[litert]") from None
    return Interpreter


class TFLiteSession:
    """Run a one-input .tflite model at any batch size; float32 in and out."""

    def __init__(self, path: Path, num_threads: int | None = None, input_names: list[str] | None = None,
                 output_names: list[str] | None = None) -> None:
        threads = num_threads or os.cpu_count() or 1  # the optimizer passes timing_threads
        self._interpreter = import_interpreter()(model_path=str(path), num_threads=threads)
        self.batches = _signature_batches(self._interpreter.get_signature_list())
        if self.batches:  # each signature has its own tensors, with their own quantization parameters
            self._runners = {n: _SignatureRunner(self._interpreter.get_signature_runner(f"batch_{n}"))
                             for n in self.batches}
            first = self._runners[self.batches[0]].runner
            input_details, outputs = first.get_input_details(), first.get_output_details()
            output_keys = sorted(outputs, key=_numbered)
            default_names = list(input_details), output_keys
            input_details, output_details = list(input_details.values()), [outputs[key] for key in output_keys]
        else:
            self._interpreter.allocate_tensors()
            interpreter = self._interpreter
            input_details, output_details = interpreter.get_input_details(), interpreter.get_output_details()
            default_names = [_clean_name(d["name"]) for d in input_details], [_clean_name(d["name"]) for d in
                                                                              output_details]
        if len(input_details) != 1:
            raise ValueError(f"tflite model {path}: expected one input, got {len(input_details)}")
        self._input, self._outputs = input_details[0], output_details
        self._input_name = (input_names or default_names[0])[0]
        self._output_names = output_names or default_names[1]
        if len(self._output_names) != len(output_details):
            raise ValueError(f"tflite model {path}: expected {len(self._output_names)} outputs "
                             f"{self._output_names}, the file has {len(output_details)}")
        self._shape: tuple[int, ...] | None = None

    def run(self, _names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._input_name not in feed:
            raise KeyError(f"tflite feed: expected input {self._input_name!r}, got {sorted(feed)}")
        batch = np.asarray(feed[self._input_name], dtype=np.float32)
        if not self.batches:
            return self._run_resized(batch)
        largest = self.batches[-1]
        chunks = [self._run_signature(batch[i:i + largest]) for i in range(0, max(len(batch), 1), largest)]
        return [np.concatenate(parts) for parts in zip(*chunks)]

    def _run_resized(self, batch: np.ndarray) -> list[np.ndarray]:
        interpreter = self._interpreter
        if batch.shape != self._shape:
            interpreter.resize_tensor_input(self._input["index"], list(batch.shape), strict=True)
            interpreter.allocate_tensors()
            self._shape = batch.shape
        interpreter.set_tensor(self._input["index"], quantize(batch, self._input))
        interpreter.invoke()
        return [dequantize(interpreter.get_tensor(o["index"]), o) for o in self._outputs]

    def _run_signature(self, batch: np.ndarray) -> list[np.ndarray]:
        rows = len(batch)
        size = next(n for n in self.batches if n >= rows)
        padded = batch if size == rows else np.concatenate([batch, np.zeros((size - rows, *batch.shape[1:]),
                                                                             batch.dtype)])
        return [answer[:rows] for answer in self._runners[size](padded)]

    def get_inputs(self) -> list[NodeInfo]:
        return [_node(self._input_name, self._input, self.batches)]

    def get_outputs(self) -> list[NodeInfo]:
        return [_node(name, o, self.batches) for name, o in zip(self._output_names, self._outputs)]


class _SignatureRunner:
    """One batch_<N> signature with its own tensors' details, looked up once."""

    def __init__(self, runner) -> None:
        self.runner = runner
        (self._input_key, self._input), = runner.get_input_details().items()
        outputs = runner.get_output_details()  # in the converter's numbering (output_2 before output_10)
        self._outputs = [(key, outputs[key]) for key in sorted(outputs, key=_numbered)]

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        answers = self.runner(**{self._input_key: quantize(batch, self._input)})
        return [dequantize(answers[key], details) for key, details in self._outputs]


def quantize(values: np.ndarray, details: dict) -> np.ndarray:
    """float32 rows as the tensor's integer type (its scale and zero point), or as they are for a float tensor."""
    dtype = np.dtype(details["dtype"])
    scale, zero_point = details["quantization"]
    if dtype not in QUANTIZED or not scale:
        return np.ascontiguousarray(values, dtype=dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, details: dict) -> np.ndarray:
    scale, zero_point = details["quantization"]
    if values.dtype not in QUANTIZED or not scale:
        return values.astype(np.float32, copy=True)
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def _signature_batches(signatures: dict) -> tuple[int, ...]:
    sizes = [int(match.group(1)) for name in signatures if (match := SIGNATURE.match(name))]
    return tuple(sorted(sizes)) if sizes and len(sizes) == len(signatures) else ()


def _node(name: str, details: dict, batches: tuple[int, ...]) -> NodeInfo:
    signature = [int(d) for d in details.get("shape_signature", details["shape"])]
    dynamic = batches or signature[0] == -1
    shape = ["batch" if i == 0 and dynamic else d for i, d in enumerate(signature)]
    dtype = "float32" if np.dtype(details["dtype"]) in QUANTIZED and details["quantization"][0] else \
        np.dtype(details["dtype"]).name
    return NodeInfo(name, f"tensor({ONNX_TYPE_NAMES.get(dtype, dtype)})", shape)


def _numbered(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _clean_name(name: str) -> str:
    return name.removeprefix("serving_default_").split(":")[0]
