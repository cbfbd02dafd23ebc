"""Dynamic int8 options on the real digits MLP: the weight type is applied, recorded, and checked."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from optimize import measure
from optimize.export import export_onnx
from optimize.quantize import prepare, quantize_int8_dynamic


@pytest.fixture(scope="module")
def prepared(digits_source, tmp_path_factory):
    work = tmp_path_factory.mktemp("int8")
    export_onnx(digits_source, work / "fp32.onnx")
    prepare(work / "fp32.onnx", work / "prepared.onnx")
    return work


def weight_dtypes(path) -> set[int]:
    """Element types of the quantized weight initializers (2-D integer tensors)."""
    return {w.data_type for w in onnx.load(str(path)).graph.initializer
            if len(w.dims) == 2 and w.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}


@pytest.mark.parametrize("weight_type, expected_dtype, recorded", [
    ("qint8", onnx.TensorProto.INT8, "QInt8"),
    ("quint8", onnx.TensorProto.UINT8, "QUInt8"),
])
def test_the_weight_type_is_applied_and_recorded(prepared, digits_source, weight_type, expected_dtype, recorded):
    target = prepared / f"{weight_type}.onnx"
    step = quantize_int8_dynamic(prepared / "prepared.onnx", target, per_channel=True, weight_type=weight_type)
    assert weight_dtypes(target) == {expected_dtype}
    assert step.settings["weight_type"] == recorded and step.settings["per_channel"] is True
    logits = measure.run(measure.open_session(target), digits_source.validation_inputs)
    accuracy = float(np.mean(logits.argmax(axis=1) == digits_source.validation_labels))
    # a sanity check with a wide margin (~0.97 on AMD EPYC): the quantized model still classifies, chance is 0.1
    assert accuracy > 0.9, f"{weight_type}: top-1 {accuracy:.3f} on held-out digits"


def test_an_unknown_weight_type_is_refused_naming_the_choices(prepared):
    with pytest.raises(ValueError, match="expected one of qint8, quint8, got 'int4'"):
        quantize_int8_dynamic(prepared / "prepared.onnx", prepared / "x.onnx", weight_type="int4")
