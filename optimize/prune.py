"""Pruning for PyTorch models: structured (removes neurons, channels and head dims) and global magnitude (zeros).

Structured pruning makes layers physically smaller, so the exported ONNX
model does less work. It uses torch-pruning's dependency graph, so it works on
any architecture the graph can trace: layers whose channels are coupled (a
convolution and its BatchNorm, every block a residual sum joins, the query,
key and value heads of attention) shrink together. Magnitude pruning only sets
weights to zero: dense runtimes run zeros at full cost, so its only gain is a
smaller file after compression, and that is all the optimizer reports for it.

What this module relies on in torch-pruning 1.6 beyond its documented pruner
arguments (checked by tests/optimize/test_prune.py::test_the_torch_pruning_contract):
- `BasePruner.step(interactive=True)` yields each group before pruning it; `pruner.DG` is the graph, with
  `is_out_channel_pruning_fn`/`is_in_channel_pruning_fn`;
- a group iterates as `(dependency, indices)`; `dependency.target` is a node with `module`, `grad_fn`
  (the autograd function of that op's output) and `outputs` (empty for the model's own outputs);
- `torch_pruning.ops.module2type` answers `OPTYPE.ELEMENTWISE` for a layer type it has no rule for;
and in PyTorch, that an autograd node keeps a tensor operand it saved as `_saved_other`/`_saved_self`
(as PyTorch's autograd notes show), to tell a scalar operand from a tensor the graph does not see.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import weakref
from dataclasses import dataclass

import numpy as np


def _prunable():
    import torch

    return (torch.nn.Linear, torch.nn.Conv2d)


class PruningUnsupported(ValueError):
    """Why this model cannot be pruned structurally; the optimizer's skip message for its candidates."""


@dataclass(frozen=True)
class Pruned:
    """A structurally pruned copy of a model, and what was done to it."""

    module: object
    groups: int  # coupled groups of layers made smaller
    attention: str  # attention layers: "none", "head dims pruned", or "left whole: <why>"


# Names of the query/key/value projections inside hand-written attention blocks; their head dims are pruned
# the same in every head. nn.MultiheadAttention is recognised by its type.
QKV_NAMES = frozenset({"q", "k", "v", "qkv", "query", "key", "value", "q_proj", "k_proj", "v_proj", "qkv_proj",
                       "to_q", "to_k", "to_v", "to_qkv", "c_attn", "Wqkv"})
HEAD_COUNT_NAMES = ("num_heads", "num_attention_heads", "n_heads", "n_head", "heads")
PROBE_RATIO = 0.5  # the share `pruning_obstacle` tries: whether a model can be pruned rarely depends on it
CRITERION = "L1 norm of each channel's weights, averaged over the layers coupled to it (torch-pruning groups)"


def structured_prune(model, ratio: float, example_inputs: tuple) -> Pruned:
    """A copy of `model` with `ratio` of the channels of each coupled group of layers removed.

    torch-pruning traces the copy on `example_inputs` (a tuple of tensors, as `forward` takes them).
    In each group the channels with the smallest L1 weight norm (averaged over the group) go. Channels
    that reach the model's outputs, or that its inputs feed directly, stay, so inputs and outputs keep
    their shapes. Attention head dims are pruned where the model's code follows (it reads head sizes
    from the weights); where it does not, attention is left whole and the rest pruned. All weights of
    the copy train. Raises PruningUnsupported saying why for this model.
    """
    if not 0 < ratio < 1:
        raise ValueError(f"structured pruning ratio: expected a fraction in (0, 1), got {ratio}")
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        raise PruningUnsupported("a TorchScript module cannot be traced and reshaped; give the Python nn.Module")
    if not _attention_layers(model):
        return _prune_copy(model, ratio, example_inputs, prune_attention=False)
    try:
        return _prune_copy(model, ratio, example_inputs, prune_attention=True)
    except PruningUnsupported as error:
        pruned = _prune_copy(model, ratio, example_inputs, prune_attention=False)
        return dataclasses.replace(pruned, attention=f"left whole: pruning its head dims failed ({error})")


_obstacles: "weakref.WeakKeyDictionary[object, str | None]" = weakref.WeakKeyDictionary()


def pruning_obstacle(model, example_inputs: tuple) -> str | None:
    """Why `model` cannot be pruned structurally (a sentence naming the model and the layer or error), or None.

    Prunes a copy once per model (remembered while the model lives): the optimizer asks for each
    candidate that prunes."""
    if model not in _obstacles:
        try:
            structured_prune(model, PROBE_RATIO, example_inputs)
            _obstacles[model] = None
        except PruningUnsupported as error:
            _obstacles[model] = str(error)
    return _obstacles[model]


def _prune_copy(model, ratio: float, example_inputs: tuple, prune_attention: bool) -> Pruned:
    import torch_pruning as tp

    smaller = copy.deepcopy(model).eval().requires_grad_(True)  # torch-pruning traces through autograd
    expected = _output_shapes(smaller, example_inputs)
    attention = _attention_layers(smaller)
    widths = {layer: _width(layer) for layer in attention}
    keeps_interface = _interface_guard(smaller, example_inputs)
    try:
        pruner = tp.pruner.BasePruner(smaller, example_inputs, pruning_ratio=ratio,
                                      importance=tp.importance.GroupMagnitudeImportance(p=1, normalizer=None),
                                      **_attention_settings(attention, prune_attention))
        groups = 0
        for group in pruner.step(interactive=True):
            if keeps_interface(group, pruner.DG):
                group.prune()
                groups += 1
    except Exception as error:  # noqa: BLE001 - torch-pruning raises many kinds of errors on graphs it cannot follow
        raise PruningUnsupported(_why(model, f"torch-pruning failed: {type(error).__name__}: {error}")) from error
    _check(model, smaller, example_inputs, expected, groups)
    return Pruned(smaller.eval(), groups, _what_happened_to(widths, prune_attention))


def _what_happened_to(widths: dict, prune_attention: bool) -> str:
    if not widths:
        return "none"
    if any(_width(layer) != width for layer, width in widths.items()):
        return "head dims pruned"
    if prune_attention:
        return "left whole: its channels are coupled to the model's inputs or outputs"
    return "left whole"


def _width(layer) -> int:
    return layer.embed_dim if hasattr(layer, "embed_dim") else layer.out_features


def _interface_guard(model, example_inputs: tuple):
    """`keeps(group, graph)`: False for a group that would change what the model returns or takes in."""
    input_readers, user_layers = _input_readers(model, example_inputs), set(model.modules())

    def keeps(group, graph) -> bool:
        for dependency, _ in group:
            node, handler = dependency.target, dependency.handler
            if graph.is_out_channel_pruning_fn(handler) and not node.outputs:
                return False  # the model's output
            if graph.is_in_channel_pruning_fn(handler) and node.module in input_readers:
                return False  # a layer's input channels that come straight from the model's input
            if node.module not in user_layers and _mixes_in_untraced(node.grad_fn):
                return False  # e.g. `x + f(x)` with x the model's input: x keeps its channels
        return True

    return keeps


def _mixes_in_untraced(grad_fn) -> bool:
    """An operation (add, multiply, concatenate) of several tensors, one of them without autograd history (the
    model's input, or a constant) and not a scalar: torch-pruning's graph does not see that tensor, so it
    cannot shrink it to match. A scalar (`q / sqrt(d)`) broadcasts to any size."""
    import torch

    operands = getattr(grad_fn, "next_functions", ())
    if len(operands) < 2 or all(function is not None for function, _ in operands):
        return False
    # autograd's saved operands (`grad_fn._saved_other`, as PyTorch's autograd notes show them)
    saved = (getattr(grad_fn, name, None) for name in ("_saved_other", "_saved_self"))
    return not any(isinstance(tensor, torch.Tensor) and tensor.numel() == 1 for tensor in saved)


def _input_readers(model, example_inputs: tuple) -> set:
    """Layers (but Embeddings, whose input is ids) whose input comes from the model's inputs alone: it carries
    no autograd history, as anything computed from a weight would."""
    import torch

    readers = set()

    def record(layer, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].grad_fn is None and not args[0].requires_grad:
            readers.add(layer)

    hooks = [layer.register_forward_pre_hook(record) for layer in model.modules()
             if not isinstance(layer, torch.nn.Embedding)]
    try:
        with torch.enable_grad():
            model(*example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return readers


def _check(model, pruned, example_inputs: tuple, expected: list, groups: int) -> None:
    try:
        got = _output_shapes(pruned, example_inputs)
    except Exception as error:  # noqa: BLE001 - whatever the model's own forward raises on its new shapes
        raise PruningUnsupported(_why(model, f"the pruned model fails: {type(error).__name__}: {error}")) from error
    if got != expected:
        raise PruningUnsupported(_why(model, f"the pruned model's outputs changed shape: {expected} -> {got}"))
    if groups == 0 or count_parameters(pruned) >= count_parameters(model):
        raise PruningUnsupported(
            f"{type(model).__name__}: nothing to remove, every group of coupled channels reaches the model's "
            "inputs or outputs")


def _why(model, what: str) -> str:
    unsupported = _unsupported_layers(model)
    if unsupported:
        what += f"; torch-pruning has no rule for {', '.join(unsupported)}"
    return f"{type(model).__name__}: {what}"


def _unsupported_layers(model) -> list[str]:
    """'Type (name)' of layers that hold weights but that torch-pruning treats as element-wise (e.g. GRU)."""
    import torch_pruning as tp

    return [f"{type(layer).__name__} ({name})" for name, layer in model.named_modules()
            if any(True for _ in layer.parameters(recurse=False))
            and tp.ops.module2type(layer) == tp.ops.OPTYPE.ELEMENTWISE][:3]


def _attention_settings(attention: dict, prune_attention: bool) -> dict:
    """torch-pruning's arguments for attention layers: each head keeps the same share of its dims (for
    nn.MultiheadAttention, whose head dims are the embedding's, as equal channel groups), or, when
    `prune_attention` is False, the attention layers and every channel coupled to them are left whole."""
    import torch

    if not prune_attention:
        return {"ignored_layers": list(attention)}
    fused = {layer: heads for layer, heads in attention.items() if isinstance(layer, torch.nn.MultiheadAttention)}
    separate = {layer: heads for layer, heads in attention.items() if layer not in fused}
    return {"num_heads": separate, "out_channel_groups": fused}


def _attention_layers(model) -> dict:
    """Attention layers with their head counts: nn.MultiheadAttention, and the query/key/value Linear layers of a
    block that names its head count (`num_heads`, `num_attention_heads`, ...)."""
    import torch

    heads = {}
    for block in model.modules():
        if isinstance(block, torch.nn.MultiheadAttention):
            heads[block] = block.num_heads
            continue
        count = next((getattr(block, name) for name in HEAD_COUNT_NAMES
                      if isinstance(getattr(block, name, None), int)), None)
        if count is None:
            continue
        for name, child in block.named_children():
            if name in QKV_NAMES and isinstance(child, torch.nn.Linear):
                heads[child] = count
    return heads


def _output_shapes(model, example_inputs: tuple) -> list:
    import torch

    with torch.no_grad():
        outputs = model(*example_inputs)
    outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
    return [tuple(output.shape) for output in outputs if isinstance(output, torch.Tensor)]


def magnitude_prune(model, sparsity: float, fine_tune) -> tuple[object, float]:
    """A copy of `model` with the `sparsity` smallest weights (global, across layers) zeroed, fine-tuned.

    `fine_tune(module)` trains with the masks in place; `prune.remove` then
    makes the zeros permanent. Returns the model and the sparsity measured.
    """
    from torch.nn.utils import prune

    pruned = copy.deepcopy(model)
    weights = [(module, "weight") for module in pruned.modules() if isinstance(module, _prunable())]
    prune.global_unstructured(weights, pruning_method=prune.L1Unstructured, amount=sparsity)
    fine_tune(pruned)
    for module, name in weights:
        prune.remove(module, name)
    return pruned.eval(), weight_sparsity(pruned)


def weight_sparsity(model) -> float:
    weights = [m.weight.detach().numpy() for m in model.modules() if isinstance(m, _prunable())]
    return float(sum((w == 0).sum() for w in weights) / sum(w.size for w in weights))


def gzip_size(data: bytes) -> int:
    """What zeros buy on a dense runtime: a smaller file to ship, once compressed."""
    return len(gzip.compress(data, compresslevel=6))


def count_parameters(model) -> int:
    return int(sum(np.prod(p.shape) for p in model.parameters()))
