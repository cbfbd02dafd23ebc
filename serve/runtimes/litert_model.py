"""LiteRT (TensorFlow Lite) artifacts, runtime "litert": a .tflite model run on the CPU with XNNPACK.

A .tflite file comes in one of two shapes, and both run here:
- one signature whose input has a dynamic batch axis (what `tf.lite.TFLiteConverter.from_keras_model`
  writes): the input is resized to a batch's shape only when the shape changes;
- signatures named `batch_<N>`, each of a fixed batch N (what litert-torch writes: it cannot export a dynamic
  batch axis): n rows run in the smallest N >= n, zero-padded and the answer sliced; batches above the largest
  N are cut into chunks of it.
The manifest's one input and its outputs map by position onto the file's tensors (outputs in the order the file
lists them; a signature's, as numbered by the converter: output_0, output_1, ..., output_10). int8/uint8 tensors
with a quantization scale (ai-edge-quantizer's static int8) are quantized on the way in and dequantized on the
way out, so every model takes and gives float32 like its fp32 source. ai_edge_litert (imported only when such an
artifact is loaded) applies its XNNPACK delegate by default. `execution_provider`, which load_model logs, says
which shape a model runs as.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from optimize.manifest import Manifest

SIGNATURE = re.compile(r"batch_([1-9][0-9]*)")


class LiteRTModel:
    def __init__(self, manifest: Manifest, model_path: Path, intra_op_threads: int = 1) -> None:
        _check_manifest(manifest, model_path)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ValueError(f"{model_path}: a litert artifact needs LiteRT; expected `pip install "
                             "optiserve[litert]` (ai-edge-litert) in the serving environment") from None
        interpreter = Interpreter(model_path=str(model_path), num_threads=intra_op_threads)
        self.manifest = manifest
        self.on_cpu = True
        self.output_names = [spec.name for spec in manifest.outputs]
        self._input_name = manifest.inputs[0].name
        self._runner = _runner_for(interpreter, model_path)
        _check_file(manifest, model_path, self._runner)
        threads = f"{intra_op_threads} thread{'s' if intra_op_threads != 1 else ''}"
        self.execution_provider = f"litert:cpu (XNNPACK, {threads}, {self._runner.description})"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output for a batch of rows of the one input, as float32 (or the file's own non-quantized type)."""
        if set(inputs) != {self._input_name}:
            raise ValueError(f"{self.manifest.name}: expected input ['{self._input_name}'], got {sorted(inputs)}")
        return dict(zip(self.output_names, self._runner.run(np.asarray(inputs[self._input_name]))))


def _check_manifest(manifest: Manifest, model_path: Path) -> None:
    if manifest.runtime != "litert":
        raise ValueError(f"{model_path}: expected runtime litert, manifest says {manifest.runtime}")
    if manifest.text_input is not None:
        raise ValueError(f"{model_path}: LiteRT artifacts take tensors, not text; expected no text_input, the "
                         "manifest has one (serve text models as onnxruntime or torch artifacts)")
    if len(manifest.inputs) != 1:
        raise ValueError(f"{model_path}: LiteRT artifacts have exactly one input, the manifest names "
                         f"{[spec.name for spec in manifest.inputs]}")


def _check_file(manifest: Manifest, model_path: Path, runner) -> None:
    """The file's outputs are as many as the manifest's, and its input row shape is the one requests are held to."""
    if runner.output_count != len(manifest.outputs):
        raise ValueError(f"{model_path}: manifest names {len(manifest.outputs)} outputs "
                         f"{[spec.name for spec in manifest.outputs]}, the .tflite file has {runner.output_count}")
    declared, row = manifest.inputs[0].shape[1:], tuple(int(d) for d in runner.input_details["shape_signature"][1:])
    if len(declared) != len(row) or any(r != -1 and d != r for d, r in zip(declared, row)):  # a file's fixed size
        # is held by the manifest too: a request the manifest let through must run
        raise ValueError(f"{model_path}: manifest input '{manifest.inputs[0].name}' has rows of shape "
                         f"{list(declared)}, the .tflite file's input has {list(row)}")


def _runner_for(interpreter, model_path: Path):
    """The runner for the file's shape: batch_<N> signatures, or one input with a dynamic batch axis."""
    signatures = interpreter.get_signature_list()
    sizes = sorted(int(m.group(1)) for m in map(SIGNATURE.fullmatch, signatures) if m)
    if sizes and len(sizes) == len(signatures):
        return _BatchSignatures(interpreter, sizes)
    inputs = interpreter.get_input_details()
    if len(signatures) <= 1 and len(inputs) == 1 and inputs[0]["shape_signature"][:1].tolist() == [-1]:
        return _ResizedInput(interpreter)
    raise ValueError(f"{model_path}: expected a .tflite file with one input of dynamic batch size, or signatures "
                     f"named batch_<N>; it has signatures {sorted(signatures)} and input shapes "
                     f"{[d['shape_signature'].tolist() for d in inputs]}")


class _ResizedInput:
    """One input with a dynamic batch axis: resized (and tensors reallocated) only when the batch shape changes."""

    def __init__(self, interpreter) -> None:
        self._interpreter = interpreter
        self._input = self.input_details = interpreter.get_input_details()[0]
        self._outputs = interpreter.get_output_details()
        self.output_count = len(self._outputs)
        self.description = "dynamic batch"
        self._shape: tuple[int, ...] | None = None

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if batch.shape != self._shape:
            self._interpreter.resize_tensor_input(self._input["index"], list(batch.shape), strict=True)
            self._interpreter.allocate_tensors()
            self._shape = batch.shape
        self._interpreter.set_tensor(self._input["index"], _to_tensor(batch, self._input))
        self._interpreter.invoke()
        # get_tensor copies, so the answers outlive the next call
        return [_from_tensor(self._interpreter.get_tensor(o["index"]), o) for o in self._outputs]


class _BatchSignatures:
    """Signatures batch_<N> of fixed batch sizes: a batch runs zero-padded in the smallest that holds it.
    Each signature's inputs and outputs are quantized with its own scales."""

    def __init__(self, interpreter, sizes: list[int]) -> None:
        self._sizes = sizes
        runners = {n: interpreter.get_signature_runner(f"batch_{n}") for n in sizes}
        # (runner, input details, output details) per size, read once: reading them costs ~20 us a call
        self._signatures = {n: (r, r.get_input_details(), r.get_output_details()) for n, r in runners.items()}
        _, first_inputs, first_outputs = self._signatures[sizes[0]]
        (self._input_key,) = first_inputs
        self.input_details = first_inputs[self._input_key]
        self._output_keys = sorted(first_outputs, key=_numbered)
        self.output_count = len(self._output_keys)
        span = f"{sizes[0]}..{sizes[-1]}" if len(sizes) > 1 else str(sizes[0])
        self.description = f"batch signatures {span}"

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        largest = self._sizes[-1]
        chunks = [self._run_padded(batch[start:start + largest]) for start in range(0, len(batch), largest)]
        return [np.concatenate(parts) if len(parts) > 1 else parts[0] for parts in zip(*chunks)]

    def _run_padded(self, rows: np.ndarray) -> list[np.ndarray]:
        size = next(n for n in self._sizes if n >= len(rows))
        runner, inputs, outputs = self._signatures[size]
        padded = rows if size == len(rows) else np.concatenate(
            [rows, np.zeros((size - len(rows), *rows.shape[1:]), rows.dtype)])
        answers = runner(**{self._input_key: _to_tensor(padded, inputs[self._input_key])})
        return [_from_tensor(answers[key], outputs[key])[:len(rows)] for key in self._output_keys]


def _numbered(name: str) -> list:
    """output_2 before output_10: the converter's numbering, not the alphabet."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _quantized(details: dict) -> tuple[float, int] | None:
    scale, zero_point = details["quantization"]
    return (scale, zero_point) if details["dtype"] in (np.int8, np.uint8) and scale != 0 else None


def _to_tensor(array: np.ndarray, details: dict) -> np.ndarray:
    """The array in the input tensor's type: quantized with its scale and zero point where it has them."""
    quantization = _quantized(details)
    if quantization is None:
        return np.ascontiguousarray(array, dtype=details["dtype"])
    scale, zero_point = quantization
    limits = np.iinfo(details["dtype"])
    values = np.round(np.asarray(array, np.float32) / scale) + zero_point
    return np.clip(values, limits.min, limits.max).astype(details["dtype"])


def _from_tensor(array: np.ndarray, details: dict) -> np.ndarray:
    quantization = _quantized(details)
    if quantization is None:
        return array
    scale, zero_point = quantization
    return ((array.astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32)
