"""Facts read from an ONNX graph for the manifest: token ids' valid range, and named dynamic axes."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from optimize.artifact import tensor_specs
from optimize.graph_facts import id_ranges
from optimize.measure import open_session


def two_input_text_model(path, vocabulary: int = 50, width: int = 4):
    """input_ids [batch, sequence] -> embedding rows, times attention_mask [batch, sequence]: BERT's front."""
    table = numpy_helper.from_array(np.random.default_rng(0).random((vocabulary, width), dtype=np.float32), "table")
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_float"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_float", "last"], ["mask_column"]),
        helper.make_node("Mul", ["embedded", "mask_column"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "one"], ["pooled"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "two_inputs",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", width])],
        [table, numpy_helper.from_array(np.array([-1], np.int64), "last"),
         numpy_helper.from_array(np.array([1], np.int64), "one")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_ids_that_index_a_table_get_its_range_and_other_inputs_none(tmp_path):
    model = two_input_text_model(tmp_path / "model.onnx", vocabulary=50)
    assert id_ranges(model) == {"input_ids": (0, 49)}


def test_the_specs_keep_the_names_of_dynamic_axes_and_the_id_range(tmp_path):
    model = two_input_text_model(tmp_path / "model.onnx", vocabulary=50)
    ids, mask = tensor_specs(open_session(model).get_inputs(), id_ranges(model))
    assert (ids.shape, ids.dim_names, ids.value_range) == ((-1, -1), ("batch", "sequence"), (0, 49))
    assert (mask.dim_names, mask.value_range) == (("batch", "sequence"), None)
    (pooled,) = tensor_specs(open_session(model).get_outputs())
    assert pooled.shape == (-1, 4) and pooled.dim_names == ("batch", None)
