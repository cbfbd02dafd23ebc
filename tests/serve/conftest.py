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


@pytest.fixture(scope="session")
def two_input_artifact(tmp_path_factory) -> Path:
    """A real two-input ONNX model, BERT's front: input_ids and attention_mask, both INT64 [batch, sequence];
    the ids index a 50-row embedding table and the output `pooled` [batch, 4] sums the rows the mask keeps.
    Its manifest is written as the optimizer writes it: the axes' names and the ids' range come from the graph."""
    import onnxruntime as ort

    from optimize.artifact import tensor_specs
    from optimize.graph_facts import id_ranges
    from optimize.manifest import Manifest, Measurement, sha256_of, write_manifest
    from tests.optimize.test_graph_facts import two_input_text_model

    artifact = tmp_path_factory.mktemp("artifacts") / "two-inputs"
    artifact.mkdir()
    model = two_input_text_model(artifact / "model.onnx", vocabulary=50)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    measured = Measurement(accuracy=1.0, latency_ms={1: 0.01}, size_bytes=model.stat().st_size)
    write_manifest(Manifest(
        name="two-inputs", version="1", sha256=sha256_of(model),
        inputs=tensor_specs(session.get_inputs(), id_ranges(model)), outputs=tensor_specs(session.get_outputs()),
        metric="none", steps=(), before=measured, after=measured, batch_deviation=0.0, machine="test",
        tool_versions={}, created_at="2026-12-03T00:00:00+00:00",
    ), artifact)
    return artifact
