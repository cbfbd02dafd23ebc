"""What an ONNX graph says about its inputs beyond their shapes: the valid range of integer ids.

An integer input that a Gather uses as indices into a constant table (an
embedding's token ids) is valid from 0 to the table's length minus one;
onnxruntime answers anything else with an error of its own text, so the
manifest records the range and the server refuses other ids first.
"""

from __future__ import annotations

from pathlib import Path

INTEGER_TYPES = {6, 7, 2, 3, 4, 5, 12, 13}  # onnx.TensorProto INT32, INT64, UINT8, INT8, UINT16, INT16, UINT32, UINT64


def id_ranges(model_path: Path) -> dict[str, tuple[int, int]]:
    """Integer graph inputs used directly as Gather indices into an initializer: input -> (0, rows - 1).

    An input that indexes several tables gets the smallest; one used in any other way as well is left out
    only if it is never a table index."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    tables = {initializer.name: initializer.dims[0] for initializer in graph.initializer if initializer.dims}
    integer_inputs = {value.name for value in graph.input if value.type.tensor_type.elem_type in INTEGER_TYPES}
    ranges: dict[str, tuple[int, int]] = {}
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) < 2:
            continue
        table, indices = node.input[0], node.input[1]
        axis = next((attribute.i for attribute in node.attribute if attribute.name == "axis"), 0)
        if indices in integer_inputs and table in tables and axis == 0:
            highest = tables[table] - 1
            ranges[indices] = (0, min(highest, ranges.get(indices, (0, highest))[1]))
    return ranges
