"""PyTorch modules to TensorFlow Lite (LiteRT) through litert-torch: fp32, dynamic-range int8 and full-integer int8.

litert-torch 0.10 cannot export a dynamic batch axis, so the file holds one signature per batch size
(`batch_1`, `batch_2`, ...; the weights are shared between them), and TFLiteSession (optimize/tflite_session.py)
answers n rows with the smallest signature that holds them. ai-edge-quantizer quantizes the fp32 file:
`dynamic_wi8_afp32` (int8 weights, activations quantized on the fly) or `static_wi8_ai8` (full integer,
calibrated on the source's calibration rows; the inputs and outputs stay float32, converted to int8 inside the graph).
Each file is checked against the module on held-out rows before it is accepted, as optimize/litert.py
checks Keras.

Calibration keeps each tensor's full range over the calibration rows, as onnxruntime's MinMax calibration
does: ai-edge-quantizer's own calibrate() keeps a moving average of each step's min/max (smoothing 0.95),
which clips rows beyond the recent ones (digits MLP and CNN, 5 epochs: held-out logits off the fp32 file's by
up to 6.9 and 7.4 with the moving average, 0.66 and 1.0 with the full range; top-1 agreement alike, 99.8% and
100%). So calibration runs one calibrate() step at a time and merges the steps' ranges. Every signature
sees every row, in batches of its size (the last filled up from the first rows), so all get the same ranges,
and a row is answered alike in a batch of any size.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np

from optimize.litert import MODES, REPRESENTATIVE_ROWS, check_against
from optimize.manifest import Step
from optimize.tflite_session import SIGNATURE, TFLiteSession, import_interpreter

RECIPES = {"dynamic_int8": "dynamic_wi8_afp32", "full_int8": "static_wi8_ai8"}  # ai_edge_quantizer.recipe names
INSTALL_HINT = "install it with: pip install .[litert-torch]"


class LiteRTConversionError(ValueError):
    """litert-torch could not convert the module; the candidate builder skips the candidate with this message."""


def torch_to_tflite(module, example_row: np.ndarray, path: Path, mode: str, check_inputs: np.ndarray,
                    calibration_inputs: np.ndarray | None, batch_sizes: tuple[int, ...],
                    converted_fp32: Path | None = None) -> Step:
    """Convert `module` to `path` in `mode` with one signature per batch size, check it on `check_inputs`.

    `example_row` is one input row (a leading batch axis of 1 is accepted too); `calibration_inputs`
    (validation rows, at most REPRESENTATIVE_ROWS used) are required for full_int8. The int8 modes
    quantize `converted_fp32` (an fp32 file this function wrote for the same module and batch sizes)
    when given, instead of converting again. Raises LiteRTConversionError where litert-torch cannot
    convert the module and ParityError where the file computes something else than the module.
    """
    sizes = _check_arguments(mode, calibration_inputs, batch_sizes)
    path, reference = Path(path), copy.deepcopy(module).eval()  # converted and compared in eval mode
    row = _one_row(example_row, check_inputs)
    settings: dict = {"api": "litert_torch.convert", "mode": mode, "quantizer": None,
                      "signatures": " ".join(f"batch_{n}" for n in sizes), "calibration_rows": None}
    if mode == "fp32":
        _convert_fp32(reference, row, path, sizes)
    elif converted_fp32 is not None:
        settings.update(_quantize(Path(converted_fp32), path, mode, calibration_inputs, sizes))
    else:
        with tempfile.TemporaryDirectory() as folder:
            _convert_fp32(reference, row, Path(folder) / "fp32.tflite", sizes)
            settings.update(_quantize(Path(folder) / "fp32.tflite", path, mode, calibration_inputs, sizes))
    session = TFLiteSession(path)
    got = session.run(None, {session.get_inputs()[0].name: np.asarray(check_inputs)})[0]
    difference, agreement = check_against(_torch_outputs(reference, check_inputs), got, mode, "PyTorch")
    return Step(name="convert_tflite", settings={
        **settings, "io_type": "float32",
        "max_abs_diff_to_torch": difference, "top1_agreement_with_torch": agreement, "bytes": path.stat().st_size,
    })


def _check_arguments(mode: str, calibration_inputs: np.ndarray | None, batch_sizes: tuple[int, ...]) -> list[int]:
    if mode not in MODES:
        raise ValueError(f"tflite mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if mode == "full_int8" and (calibration_inputs is None or len(calibration_inputs) == 0):
        raise ValueError("tflite full_int8: expected calibration_inputs (validation rows) to calibrate "
                         "activations, got none")
    if not batch_sizes or any(not isinstance(n, int) or n < 1 for n in batch_sizes):
        raise ValueError(f"tflite batch_sizes: expected positive integers, got {batch_sizes!r}")
    return sorted(set(batch_sizes))


def _one_row(example_row: np.ndarray, check_inputs: np.ndarray) -> np.ndarray:
    row, row_shape = np.asarray(example_row), tuple(np.shape(check_inputs)[1:])
    if row.shape == (1, *row_shape):
        return row[0]
    if row.shape != row_shape:
        raise ValueError(f"tflite example_row: expected shape {list(row_shape)} (one row of the check inputs), "
                         f"got {list(row.shape)}")
    return row


def _import_litert_torch():
    torchao = logging.getLogger("torchao")  # litert-torch imports torchao, which warns of its CUDA-only kernels
    if torchao.level == logging.NOTSET:
        torchao.setLevel(logging.ERROR)
    try:
        import litert_torch
    except ImportError as error:
        raise ImportError(f"converting PyTorch modules to .tflite needs litert-torch; {INSTALL_HINT}") from error
    return litert_torch


@contextmanager
def _quiet_conversion(litert_torch):
    """litert-torch's progress lines off (its documented config flag) and torch.export's deprecation warnings."""
    shown = litert_torch.config.show_progress
    litert_torch.config.show_progress = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        litert_torch.config.show_progress = shown


def _convert_fp32(module, row: np.ndarray, path: Path, sizes: list[int]) -> None:
    import torch

    litert_torch = _import_litert_torch()
    converter = litert_torch.Converter()
    for n in sizes:
        converter.signature(f"batch_{n}", module, (torch.from_numpy(np.repeat(row[None], n, axis=0)),))
    with _quiet_conversion(litert_torch):
        try:
            edge_model = converter.convert()
        except Exception as error:  # torch.export and the JAX/MLIR lowering raise many types, all "cannot convert"
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise LiteRTConversionError(
                f"PyTorch module {type(module).__name__} (signatures batch_{sizes[0]}..batch_{sizes[-1]}, row shape "
                f"{list(row.shape)}): litert-torch {litert_torch.__version__} could not convert it: {first_line}"
            ) from error
        edge_model.export(str(path))


def _quantize(fp32_path: Path, path: Path, mode: str, calibration_inputs: np.ndarray | None,
              sizes: list[int]) -> dict:
    try:
        import ai_edge_quantizer
        from ai_edge_quantizer import recipe
    except ImportError as error:
        raise ImportError(f"int8 .tflite from PyTorch needs ai-edge-quantizer; {INSTALL_HINT}") from error
    inputs = _signature_inputs(fp32_path)
    if sorted(inputs) != sizes:
        raise ValueError(f"tflite converted_fp32 {fp32_path}: expected signatures for batch sizes {sizes}, "
                         f"got {sorted(inputs)}")
    quantizer = ai_edge_quantizer.Quantizer(str(fp32_path))
    quantizer.load_quantization_recipe(_recipe(recipe, mode))
    calibration, rows = None, None
    with _quiet_quantizer():
        if mode == "full_int8":
            rows = np.asarray(calibration_inputs, dtype=np.float32)[:REPRESENTATIVE_ROWS]
            calibration = _full_range_calibration(quantizer, inputs, rows)
        result = quantizer.quantize(calibration, enable_progress_bar=False, enable_progress_report=False)
    result.export_model(str(path), overwrite=True)
    return {"quantizer": f"ai-edge-quantizer {metadata.version('ai-edge-quantizer')} {RECIPES[mode]}",
            "calibration_rows": None if rows is None else len(rows)}


def _recipe(recipe, mode: str) -> list[dict]:
    """ai-edge-quantizer's recipe for `mode`; for full int8 with the file's inputs and outputs left in float32,
    so the int8 conversion happens inside the graph (digits MLP, 1 thread: 8.3 us at b1 and 18.1 at b32 against
    30.1 and 32.0 with int8 inputs and outputs quantized around each call)."""
    rules = getattr(recipe, RECIPES[mode])()
    if mode != "full_int8":
        return rules
    return [*rules, *({"regex": ".*", "operation": op, "algorithm_key": recipe.AlgorithmName.NO_QUANTIZE.value,
                       "op_config": {}} for op in ("INPUT", "OUTPUT"))]


class _SharedBufferNotice(logging.Filter):
    """Drops ai-edge-quantizer's root-logger warning that a weight buffer shared by the signatures was quantized
    again: every signature quantizes it alike, since the calibration gives them all the same scales."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is overriding other previously quantized data in buffer" not in record.getMessage()


@contextmanager
def _quiet_quantizer():
    notice = _SharedBufferNotice()
    logging.getLogger().addFilter(notice)
    try:
        with warnings.catch_warnings():  # its calibration interpreters keep every tensor on purpose and warn so
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors", category=UserWarning)
            yield
    finally:
        logging.getLogger().removeFilter(notice)


def _signature_inputs(path: Path) -> dict[int, str]:
    """Each batch_<N> signature's one input name, read from the file (litert-torch names it args_0 today)."""
    signatures = import_interpreter()(model_path=str(path)).get_signature_list()
    names = {key: spec["inputs"] for key, spec in signatures.items()}
    sizes = {key: SIGNATURE.fullmatch(key) for key in names}  # the names TFLiteSession and the server run
    if any(size is None or len(names[key]) != 1 for key, size in sizes.items()):
        raise ValueError(f"tflite model {path}: expected signatures batch_<N> of one input each, got {names}")
    return {int(size.group(1)): names[key][0] for key, size in sizes.items()}


def _full_range_calibration(quantizer, inputs: dict[int, str], rows: np.ndarray) -> dict:
    """Each tensor's min and max over all `rows` in every signature (see the module doc), one step at a time."""
    ranges: dict = {}
    for step in range(len(rows)):  # batch_1 takes a step per row; batch_N is done after len(rows) / N steps
        batches = {f"batch_{n}": [{name: np.take(rows, range(step * n, (step + 1) * n), axis=0, mode="wrap")}]
                   for n, name in inputs.items() if step * n < len(rows)}
        for tensor, qsv in quantizer.calibrate(batches, num_threads=os.cpu_count() or 1).items():
            seen = ranges.get(tensor)
            ranges[tensor] = qsv if seen is None else {**qsv, "min": np.minimum(seen["min"], qsv["min"]),
                                                       "max": np.maximum(seen["max"], qsv["max"])}
    return ranges


def _torch_outputs(module, inputs: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        outputs = module(torch.from_numpy(np.ascontiguousarray(inputs)))
    return (outputs[0] if isinstance(outputs, (tuple, list)) else outputs).numpy()
