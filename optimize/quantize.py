"""onnxruntime INT8 dynamic quantization (weights int8, activations quantized at run time).

A plan says which weight nodes get a scale per output channel and which stay
in float; every other weight node gets one scale per tensor. The accuracy
guard (optimize.guard) builds plans from measured sensitivity.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from optimize.manifest import Step

# Ops onnxruntime's dynamic quantizer rewrites when one input is a constant weight.
WEIGHT_OPS = ("MatMul", "Gemm", "Gather")


@dataclass(frozen=True)
class Int8Plan:
    per_channel: tuple[str, ...] = ()
    keep_float: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{len(self.per_channel)} node(s) per-channel, {len(self.keep_float)} kept in float"


def prepare(source: Path, target: Path) -> None:
    """onnxruntime's quantization pre-processing: shape inference and graph clean-up.

    Symbolic shape inference cannot follow every exported graph (dynamo's
    `Min(512, sequence)` for one); plain ONNX shape inference is the fallback.
    """
    from onnxruntime.quantization.preprocess import quant_pre_process

    source, target = Path(source).resolve(), Path(target).resolve()
    # a failed symbolic pass leaves temporary files in the working directory: give it a scratch one
    with tempfile.TemporaryDirectory(prefix="optiserve-prep-") as scratch, contextlib.chdir(scratch):
        try:
            quant_pre_process(str(source), str(target), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - onnxruntime raises bare Exception for incomplete inference
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)


def weight_nodes(model_path: Path) -> list[str]:
    """Names of the nodes dynamic quantization would rewrite, in graph order."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    constants = {initializer.name for initializer in model.graph.initializer}
    return [
        node.name for node in model.graph.node
        if node.op_type in WEIGHT_OPS and any(name in constants for name in node.input)
    ]


WEIGHT_TYPES = {"qint8": "QInt8", "quint8": "QUInt8"}  # dynamic int8: signed or unsigned weights


def quantize_int8_dynamic(
    prepared: Path, target: Path, per_channel: bool = False, reduce_range: bool = False,
    plan: Int8Plan | None = None, nodes: list[str] | None = None, weight_type: str = "qint8",
) -> Step:
    """Quantize a prepared model. With a plan, `nodes` (from weight_nodes) are the candidates."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"weight_type: expected one of {', '.join(WEIGHT_TYPES)}, got {weight_type!r}")
    options = {"weight_type": getattr(QuantType, WEIGHT_TYPES[weight_type]), "reduce_range": reduce_range}
    if plan is None:
        quantize_dynamic(str(prepared), str(target), per_channel=per_channel, **options)
        return Step(name="quantize_int8_dynamic", settings={
            "weight_type": WEIGHT_TYPES[weight_type], "per_channel": per_channel, "reduce_range": reduce_range,
        })
    source = prepared
    if plan.per_channel:
        source = target.with_suffix(".per_channel.onnx")
        quantize_dynamic(str(prepared), str(source), per_channel=True, nodes_to_quantize=list(plan.per_channel),
                         **options)
    rest = [n for n in nodes or [] if n not in plan.per_channel and n not in plan.keep_float]
    if rest:  # onnxruntime reads an empty nodes_to_quantize as "all nodes"
        quantize_dynamic(str(source), str(target), per_channel=per_channel, nodes_to_quantize=rest, **options)
    else:
        shutil.copyfile(source, target)
    if source != prepared:
        source.unlink()
    return Step(name="quantize_int8_dynamic", settings={
        "weight_type": WEIGHT_TYPES[weight_type], "per_channel": per_channel, "reduce_range": reduce_range,
        "per_channel_nodes": ",".join(plan.per_channel), "float_nodes": ",".join(plan.keep_float),
    })


CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def quantize_int8_static(
    prepared: Path, target: Path, calibration_feeds: list[dict], method: str = "minmax", per_channel: bool = True,
    nodes_to_exclude: tuple[str, ...] = (),
) -> Step:
    """Static INT8 in QDQ format (S8S8): activation scales fixed from calibration data, so an input's
    answer never depends on what it is batched with. Feeds must share one shape (entropy and
    percentile calibration stack them)."""
    from onnxruntime.quantization import (
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static,
    )
    from tqdm.auto import tqdm

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"calibration method: expected one of {', '.join(methods)}, got {method!r}")

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(tqdm(calibration_feeds, desc=f"calibrating ({method})", unit="batch", leave=False))

        def get_next(self):
            return next(self._feeds, None)

    quantize_static(
        str(prepared), str(target), Feeds(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=methods[method],
        nodes_to_exclude=list(nodes_to_exclude),
    )
    return Step(name="quantize_int8_static", settings={
        "format": "QDQ", "activations": "QInt8", "weights": "QInt8", "per_channel": per_channel,
        "calibration_method": method, "calibration_batches": len(calibration_feeds),
        "float_nodes": ",".join(nodes_to_exclude),
    })
