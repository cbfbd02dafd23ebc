"""Per-row int8: a graph transform whose answers never depend on batch-mates.

onnxruntime's dynamic quantization computes one activation scale per tensor,
so a row's answer moves with whichever rows share its model call. Here each
MatMul/Gemm with a constant weight [K, N] is rewritten so the activation
A [..., K] is quantized per row (per token for 3-D activations): the row's
absolute maximum over K gives its scale, q = round(A * 127 / absmax) + 128 as
uint8 (u8 x s8 is onnxruntime's fast integer path on AVX2 and VNNI alike),
then MatMulInteger against int8 weights (symmetric, one scale per output
column), and the int32 result times the column scale and the row scale.
Constant embedding tables (Gather on axis 0) are stored int8 with one scale
per table row. Every op is row-local, so a row's result depends on that row
only: batch invariance by construction. Graph inputs, outputs and every
rewritten node's output name are kept.

Choices, measured on AMD EPYC (AVX2, no VNNI), onnxruntime 1.32, one thread:
- MatMulInteger 640x384 by 384x1536: u8 x s8 5.0 ms, u8 x u8 13.6 ms, s8 x s8
  86 ms (fp32 MatMul 23 ms): activations are uint8 around 128.
- Without VNNI, u8 x s8 kernels sum pairs of products in int16
  (vpmaddubsw) and can saturate: 2 x 255 x 127 > 32767. u8s8_saturates()
  probes the installed onnxruntime on this CPU once; where it saturates,
  weights take [-64, 64] (onnxruntime's reduce_range), which cannot. This
  EPYC (AVX-512 VNNI) is exact at full range.
- One weight scale per column, not per tensor: MiniLM per-tensor weights
  scored cosine 0.968 mean / 0.944 worst, per column 0.997 / 0.995.
- The row scale is applied by its own Mul after the column scales. Written as
  Cast -> Mul(Mul(row scale, weight scale)), onnxruntime's
  MatMulIntegerToFloat fusion takes the row scale for a scalar (MiniLM
  cosine 0.60): the numpy-reference test catches such a rewrite.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from optimize.guard import Score, Tolerance
from optimize.manifest import Step

ROW_OPS = ("MatMul", "Gemm", "Gather")
ACTIVATION_ZERO_POINT = 128  # uint8 activations, symmetric around 128
ACTIVATION_MAX = 127.0
TINY = 1e-12  # floor on a row's absmax: an all-zero row quantizes to zeros, never to NaN
CONTRIB_DOMAIN = "com.microsoft"
FULL_RANGE, REDUCED_RANGE = 127, 64  # int8 weight limits: 2 x 255 x 64 fits in int16, 2 x 255 x 127 does not


def row_int8_nodes(model_path: Path) -> list[str]:
    """Names of the nodes quantize_int8_per_row would rewrite, in graph order."""
    import onnx

    model = onnx.load(str(model_path))
    constants = {i.name: i for i in model.graph.initializer}
    return [node.name for node in model.graph.node if _weight_of(node, constants) is not None]


def quantize_int8_per_row(
    fp32: Path, target: Path, keep_float: tuple[str, ...] = (), contrib_rescale: bool = False,
    reduce_range: bool | None = None,
) -> Step:
    """Rewrite every weight node of `fp32` (but those named in keep_float) to per-row int8; save to target.

    The int32 product becomes float by Cast and Mul (column scales), then Mul
    (row scales): standard ONNX ops. contrib_rescale does the first two in
    onnxruntime's MatMulIntegerToFloat (com.microsoft; its a_scale is a
    scalar, so it gets 1): measured on AMD EPYC, MiniLM batch 32, only 2.5%
    less time (paired median, quartiles 0.97x-1.12x), so it is not the default.
    reduce_range None: weights in [-64, 64] only where this CPU's u8 x s8 saturates.
    """
    import onnx

    reduce_range = u8s8_saturates() if reduce_range is None else reduce_range
    limit = REDUCED_RANGE if reduce_range else FULL_RANGE
    model = onnx.load(str(fp32))
    rewritten = _Rewriter(model, contrib_rescale, limit).rewrite(set(keep_float))
    if contrib_rescale and rewritten:
        model.opset_import.append(onnx.helper.make_opsetid(CONTRIB_DOMAIN, 1))
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return Step(name="quantize_int8_per_row", settings={
        "activations": "uint8 per row (per token), zero point 128, scale = row absmax / 127",
        "weights": "int8 symmetric, one scale per output column; embedding tables one scale per row",
        "weight_range": f"[-{limit}, {limit}]", "reduce_range": reduce_range,
        "rescale": f"MatMulIntegerToFloat ({CONTRIB_DOMAIN})" if contrib_rescale else "Cast, Mul (ai.onnx)",
        "nodes": rewritten, "float_nodes": ",".join(keep_float),
    })


def guarded_per_row_int8(
    fp32: Path, target: Path, score_model: Callable[[Path], Score], tolerance: Tolerance, work_dir: Path,
    log: Callable[[str], None] = print, contrib_rescale: bool = False, reduce_range: bool | None = None,
) -> tuple[Step | None, Score]:
    """The accuracy guard (optimize/guard.py) for per-row int8: every weight node first; if the score misses
    the tolerance, rank the nodes by how far each alone lowers it, and keep the most sensitive 1, 2, ...
    in float until it holds. (None, last score) when even one node left int8 misses it."""
    trial = work_dir / "row-int8-trial.onnx"

    def score(keep_float: tuple[str, ...]) -> Score:
        quantize_int8_per_row(fp32, trial, keep_float, contrib_rescale, reduce_range)
        return score_model(trial)

    nodes, kept = row_int8_nodes(fp32), ()
    result = score(kept)
    log(f"per-row int8, every weight node: mean {result.mean:.4f}, worst {result.worst:.4f} ({tolerance})")
    if not tolerance.holds(result):
        alone = {node: score(tuple(n for n in nodes if n != node)).mean for node in nodes}
        ranked = sorted(nodes, key=alone.__getitem__)
        for count in range(1, len(ranked)):
            kept = tuple(ranked[:count])
            result = score(kept)
            log(f"per-row int8, {count} node(s) kept in float: mean {result.mean:.4f}, worst {result.worst:.4f}")
            if tolerance.holds(result):
                break
        else:
            return None, result
    return quantize_int8_per_row(fp32, target, kept, contrib_rescale, reduce_range), result


def quantize_weight(weight: np.ndarray, axis: int, limit: int = FULL_RANGE) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 in [-limit, limit], one scale per slice along `axis` reduced away (axis=0: per column
    of [K, N])."""
    absmax = np.max(np.abs(weight), axis=axis, keepdims=True)
    scale = np.where(absmax > 0, absmax / limit, 1.0).astype(np.float32)
    quantized = np.clip(np.round(weight / scale), -limit, limit).astype(np.int8)
    return quantized, scale


@functools.cache
def u8s8_saturates() -> bool:
    """Whether onnxruntime's MatMulInteger (uint8 activations around 128, int8 weights) is inexact at full
    range on this CPU: AVX2 without VNNI sums product pairs in int16."""
    return not integer_matmul_is_exact(FULL_RANGE)


def integer_matmul_is_exact(weight_limit: int, depth: int = 384) -> bool:
    """MatMulInteger on extreme values (activations 0, 1 and 255; weights +-weight_limit) against int64."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.choice([-weight_limit, weight_limit], (depth, 64)).astype(np.int8)
    weight[:, 0] = weight_limit  # all-255 rows against this column saturate any int16 pair sum at full range
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w", "zero_point"], ["y"])], "extremes",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, ["rows", depth])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["rows", 64])],
        [numpy_helper.from_array(weight, "w"),
         numpy_helper.from_array(np.array(ACTIVATION_ZERO_POINT, np.uint8), "zero_point")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for rows in (1, 7, 64):
        a = rng.choice([0, 1, 255], (rows, depth)).astype(np.uint8)
        a[0] = 255
        expected = (a.astype(np.int64) - ACTIVATION_ZERO_POINT) @ weight.astype(np.int64)
        if not np.array_equal(session.run(None, {"a": a})[0], expected):
            return False
    return True


def _weight_of(node, constants: dict):
    """The constant weight tensor a node would be rewritten around, or None."""
    if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in constants:
        if _attribute(node, "transA", 0) == 0 and len(constants[node.input[1]].dims) == 2:
            return constants[node.input[1]]
    if node.op_type == "Gather" and node.input[0] in constants and _attribute(node, "axis", 0) == 0:
        if len(constants[node.input[0]].dims) == 2:
            return constants[node.input[0]]
    return None


def _attribute(node, name: str, default):
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


@dataclass
class _Rewriter:
    model: object
    contrib_rescale: bool = False
    weight_limit: int = FULL_RANGE
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    _quantized: dict = field(default_factory=dict)  # activation name -> (uint8 name, row scale name)

    def rewrite(self, keep_float: set[str]) -> int:
        graph = self.model.graph
        constants = {i.name: i for i in graph.initializer}
        self._shared_constants()
        count = 0
        for node in graph.node:
            weight = _weight_of(node, constants)
            if weight is None or node.name in keep_float:
                self.nodes.append(node)
                continue
            getattr(self, f"_rewrite_{node.op_type.lower()}")(node, weight)
            count += 1
        del graph.node[:]
        graph.node.extend(self.nodes)
        graph.initializer.extend(self.initializers)
        _drop_unused_initializers(graph)
        return count

    def _name(self, base: str, suffix: str) -> str:
        return f"{base}/row_int8/{suffix}"

    def _constant(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def _node(self, op: str, inputs: list[str], output: str, name: str | None = None, **attributes) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=name or output, **attributes))
        return output

    def _shared_constants(self) -> None:
        self._constant("row_int8/zero_point", np.array(ACTIVATION_ZERO_POINT, np.uint8))
        self._constant("row_int8/one", np.array(1.0, np.float32))
        self._constant("row_int8/q_max", np.array(ACTIVATION_MAX, np.float32))
        self._constant("row_int8/tiny", np.array(TINY, np.float32))
        self._constant("row_int8/last_axis", np.array([-1], np.int64))

    def _quantize_rows(self, activation: str) -> tuple[str, str]:
        """uint8 rows (zero point 128) and their scales [..., 1], built once per activation."""
        if activation not in self._quantized:
            name = lambda suffix: self._name(activation, suffix)  # noqa: E731
            # max and -min: two reading passes, cheaper than writing Abs(A) and reducing it
            highest = self._reduce("ReduceMax", activation, name("max"))
            lowest = self._reduce("ReduceMin", activation, name("min"))
            negated = self._node("Neg", [lowest], name("negated_min"))
            floored = self._node("Max", [highest, negated, "row_int8/tiny"], name("absmax_floored"))
            inverse = self._node("Div", ["row_int8/q_max", floored], name("inverse_scale"))
            scale = self._node("Div", [floored, "row_int8/q_max"], name("scale"))
            scaled = self._node("Mul", [activation, inverse], name("scaled"))
            quantized = self._node("QuantizeLinear", [scaled, "row_int8/one", "row_int8/zero_point"], name("uint8"))
            self._quantized[activation] = (quantized, scale)
        return self._quantized[activation]

    def _reduce(self, op: str, source: str, output: str) -> str:
        """A reduction over the last axis, keeping it (axes are an input from opset 18, an attribute before)."""
        opset = next(o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx"))
        if opset >= 18:
            return self._node(op, [source, "row_int8/last_axis"], output, keepdims=1)
        return self._node(op, [source], output, axes=[-1], keepdims=1)

    def _integer_matmul(self, node, weight: np.ndarray, output: str, column_factor: float = 1.0) -> None:
        """output = (per-row uint8 A) x (int8 weight [K, N]), rescaled to float."""
        quantized, row_scale = self._quantize_rows(node.input[0])
        int8_weight, column_scale = quantize_weight(weight, axis=0, limit=self.weight_limit)
        name = lambda suffix: self._name(node.name or output, suffix)  # noqa: E731
        weight_name = self._constant(name("weight_int8"), int8_weight)
        scale_name = self._constant(name("column_scale"), (column_scale.reshape(-1) * column_factor).astype(np.float32))
        if self.contrib_rescale:
            by_column = self._node("MatMulIntegerToFloat", [
                quantized, weight_name, "row_int8/one", scale_name, "row_int8/zero_point",
            ], name("by_column"), domain=CONTRIB_DOMAIN)
        else:
            product = self._node("MatMulInteger", [quantized, weight_name, "row_int8/zero_point"], name("int32"))
            as_float = self._node("Cast", [product], name("float"), to=1)  # 1: FLOAT
            by_column = self._node("Mul", [as_float, scale_name], name("by_column"))
        self._node("Mul", [by_column, row_scale], output, name=node.name if output == node.output[0] else None)

    def _rewrite_matmul(self, node, weight) -> None:
        from onnx import numpy_helper

        self._integer_matmul(node, numpy_helper.to_array(weight).astype(np.float32), node.output[0])

    def _rewrite_gemm(self, node, weight) -> None:
        """Y = alpha * A x B' + beta * C, B' = B or its transpose."""
        from onnx import numpy_helper

        matrix = numpy_helper.to_array(weight).astype(np.float32)
        matrix = matrix.T if _attribute(node, "transB", 0) else matrix
        alpha, beta = _attribute(node, "alpha", 1.0), _attribute(node, "beta", 1.0)
        if len(node.input) < 3 or not node.input[2]:
            self._integer_matmul(node, matrix, node.output[0], alpha)
            return
        product = self._name(node.name or node.output[0], "product")
        self._integer_matmul(node, matrix, product, alpha)
        bias = node.input[2]
        if beta != 1.0:
            factor = self._constant(self._name(product, "beta"), np.array(beta, np.float32))
            bias = self._node("Mul", [bias, factor], self._name(product, "scaled_bias"))
        self._node("Add", [product, bias], node.output[0], name=node.name)

    def _rewrite_gather(self, node, table) -> None:
        """An embedding table stored int8 with one scale per row; both gathered by the same indices."""
        from onnx import numpy_helper

        int8_table, row_scale = quantize_weight(numpy_helper.to_array(table).astype(np.float32), axis=1)
        name = lambda suffix: self._name(node.name or node.output[0], suffix)  # noqa: E731
        table_name = self._constant(name("table_int8"), int8_table)
        scale_name = self._constant(name("row_scale"), row_scale)
        rows = self._node("Gather", [table_name, node.input[1]], name("rows"), axis=0)
        scales = self._node("Gather", [scale_name, node.input[1]], name("scales"), axis=0)
        as_float = self._node("Cast", [rows], name("float"), to=1)  # 1: FLOAT
        self._node("Mul", [as_float, scales], node.output[0], name=node.name)


def _drop_unused_initializers(graph) -> None:
    used = _names_used(graph)
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _names_used(graph) -> set[str]:
    """Every name a node reads, in this graph and in the subgraphs of If/Loop/Scan bodies."""
    from onnx import helper

    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        for attribute in node.attribute:
            value = helper.get_attribute_value(attribute)
            for subgraph in value if isinstance(value, list) else [value]:
                if hasattr(subgraph, "node"):
                    used |= _names_used(subgraph)
    return used
