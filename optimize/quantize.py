"""onnxruntime INT8 dynamic quantization (weights int8, activations quantized at run time)."""

from __future__ import annotations

from pathlib import Path

from optimize.manifest import Step


def quantize_int8_dynamic(source: Path, target: Path, per_channel: bool, reduce_range: bool) -> Step:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.preprocess import quant_pre_process

    prepared = target.with_suffix(".prep.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
    quantize_dynamic(
        str(prepared), str(target),
        weight_type=QuantType.QInt8, per_channel=per_channel, reduce_range=reduce_range,
    )
    prepared.unlink()
    return Step(
        name="quantize_int8_dynamic",
        settings={"weight_type": "QInt8", "per_channel": per_channel, "reduce_range": reduce_range},
    )
