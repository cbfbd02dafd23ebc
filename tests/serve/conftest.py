"""Fixtures for serve tests: small real artifacts with shapes the demo models do not have."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def two_dynamic_dims_artifact(tmp_path_factory) -> Path:
    """A real ONNX model with input x: FP32 [batch, -1, -1] and output total: FP32 [batch], the sum of each row's
    values: its two free dimensions let a shape's element count (or a 0 in it) hide past the batch dimension."""
    import onnx
    from onnx import TensorProto, helper

    from optimize.manifest import Manifest, Measurement, TensorSpec, sha256_of, write_manifest

    artifact = tmp_path_factory.mktemp("artifacts") / "row-sum"
    artifact.mkdir()
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0)], "row_sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "rows", "columns"])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, artifact / "model.onnx")
    measured = Measurement(accuracy=1.0, latency_ms={1: 0.01}, size_bytes=(artifact / "model.onnx").stat().st_size)
    write_manifest(Manifest(
        name="row-sum", version="1", sha256=sha256_of(artifact / "model.onnx"),
        inputs=(TensorSpec(name="x", datatype="FP32", shape=(-1, -1, -1)),),
        outputs=(TensorSpec(name="total", datatype="FP32", shape=(-1,)),),
        metric="none", steps=(), before=measured, after=measured, batch_deviation=0.0, machine="test",
        tool_versions={}, created_at="2026-12-03T00:00:00+00:00",
    ), artifact)
    return artifact
