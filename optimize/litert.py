"""Keras models to TensorFlow Lite (LiteRT): fp32, dynamic-range int8 and full-integer int8.

`tf.lite.TFLiteConverter.from_keras_model` writes the .tflite file; each
result is run with `tf.lite.Interpreter` on held-out inputs and compared with
the Keras model before it is accepted. Full-integer int8 follows TensorFlow's
post-training recipe: a representative dataset of validation rows calibrates
every activation, and only int8 builtin ops are allowed; the model still
takes and returns float32, so callers feed it like the fp32 model.

Each file is checked through `TFLiteSession` (optimize/tflite_session.py):
LiteRT with XNNPACK, the runtime that serves it. TensorFlow is imported inside
functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optimize.export import ParityError
from optimize.keras_source import import_tf
from optimize.manifest import Step
from optimize.tflite_session import TFLiteSession

MODES = ("fp32", "dynamic_int8", "full_int8")
FP32_TOLERANCE = 1e-4  # max abs difference to Keras, as for the ONNX export
MIN_INT8_TOP1_AGREEMENT = 0.97  # share of held-out rows whose arg-max matches Keras in the int8 modes
REPRESENTATIVE_ROWS = 100  # TensorFlow's recipe calibrates on about a hundred samples


def keras_to_tflite(model, path: Path, mode: str, check_inputs: np.ndarray,
                    representative_inputs: np.ndarray | None = None) -> Step:
    """Convert `model` to `path` in `mode`, check it against Keras on `check_inputs`, and say how it was made.

    `representative_inputs` (validation rows) are required for full_int8.
    Raises ParityError when the file computes something else than Keras.
    """
    _check_arguments(mode, representative_inputs)
    path = Path(path)
    path.write_bytes(_convert(model, mode, representative_inputs))
    expected = model(check_inputs, training=False).numpy()
    session = TFLiteSession(path)
    got = session.run(None, {session.get_inputs()[0].name: check_inputs})[0]
    difference, agreement = check_against(expected, got, mode, "Keras")
    return Step(name="convert_tflite", settings={
        "api": "tf.lite.TFLiteConverter.from_keras_model", "mode": mode,
        "optimizations": "none" if mode == "fp32" else "Optimize.DEFAULT",
        "supported_ops": "TFLITE_BUILTINS_INT8" if mode == "full_int8" else "TFLITE_BUILTINS",
        "representative_rows": _representative_count(representative_inputs) if mode == "full_int8" else None,
        "io_type": "float32", "max_abs_diff_to_keras": difference, "top1_agreement_with_keras": agreement,
        "bytes": path.stat().st_size,
    })


def _check_arguments(mode: str, representative_inputs: np.ndarray | None) -> None:
    if mode not in MODES:
        raise ValueError(f"tflite mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if mode == "full_int8" and (representative_inputs is None or len(representative_inputs) == 0):
        raise ValueError("tflite full_int8: expected representative_inputs (validation rows) to calibrate "
                         "activations, got none")


def _convert(model, mode: str, representative_inputs: np.ndarray | None) -> bytes:
    tf = import_tf().tf
    if len(model.inputs) != 1:
        raise ValueError(f"keras model: expected one input, got {len(model.inputs)}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "full_int8":
        converter.representative_dataset = _representative_dataset(representative_inputs)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def _representative_count(inputs: np.ndarray) -> int:
    return min(len(inputs), REPRESENTATIVE_ROWS)


def _representative_dataset(inputs: np.ndarray):
    rows = np.asarray(inputs, dtype=np.float32)[:REPRESENTATIVE_ROWS]

    def batches():
        for row in rows:
            yield [row[None]]
    return batches


def check_against(expected: np.ndarray, got: np.ndarray, mode: str, original: str) -> tuple[float, float | None]:
    """(max abs difference, share of rows whose top-1 class agrees) of a converted file's outputs `got` to the
    `original` model's; ParityError where fp32 differs beyond FP32_TOLERANCE or int8 agrees on too few rows."""
    difference = float(np.max(np.abs(expected - got)))
    agreement = None
    if expected.ndim == 2 and expected.shape[1] >= 2:
        agreement = float(np.mean(expected.argmax(axis=1) == got.argmax(axis=1)))
    if mode == "fp32" and not difference <= FP32_TOLERANCE:
        raise ParityError(f"tflite fp32 differs from {original}: max abs diff {difference:.3g}, "
                          f"expected at most {FP32_TOLERANCE:.3g}")
    if mode != "fp32" and agreement is not None and not agreement >= MIN_INT8_TOP1_AGREEMENT:
        raise ParityError(f"tflite {mode} agrees with {original} on the top-1 class of {agreement:.1%} of held-out "
                          f"rows, expected at least {MIN_INT8_TOP1_AGREEMENT:.0%}")
    return difference, agreement
