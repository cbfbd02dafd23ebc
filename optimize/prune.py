"""Pruning for PyTorch models: structured (removes neurons and channels) and global magnitude (zeros).

Structured pruning makes every hidden Linear/Conv2d layer physically smaller,
so the exported ONNX model does less work. Magnitude pruning only sets weights
to zero: dense runtimes run zeros at full cost, so its only gain is a smaller
file after compression, and that is all the optimizer reports for it.
"""

from __future__ import annotations

import copy
import gzip

import numpy as np


def _prunable():
    import torch

    return (torch.nn.Linear, torch.nn.Conv2d)


def structured_prune(model, ratio: float):
    """A copy of an `nn.Sequential` with `ratio` of each hidden layer's outputs removed.

    Outputs with the smallest L1 weight norm go; the next Linear/Conv2d loses
    the matching inputs (for Conv2d -> Flatten -> Linear, each channel's whole
    block of flattened features). The last layer keeps all its outputs.
    """
    import torch

    if not isinstance(model, torch.nn.Sequential):
        raise TypeError(f"structured pruning: expected an nn.Sequential, got {type(model).__name__}")
    if not 0 < ratio < 1:
        raise ValueError(f"structured pruning ratio: expected a fraction in (0, 1), got {ratio}")
    layers = [copy.deepcopy(layer) for layer in model]
    positions = [i for i, layer in enumerate(layers) if isinstance(layer, _prunable())]
    for here, following in zip(positions, positions[1:]):
        layer = layers[here]
        norms = layer.weight.detach().abs().reshape(layer.weight.shape[0], -1).sum(dim=1)
        keep = torch.sort(torch.topk(norms, max(1, round(len(norms) * (1 - ratio)))).indices).values
        layers[here] = _keep_outputs(layer, keep)
        for between in range(here + 1, following):
            if isinstance(layers[between], torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                layers[between] = _keep_batchnorm(layers[between], keep)
        layers[following] = _keep_inputs(layers[following], keep, len(norms))
    return torch.nn.Sequential(*layers).eval()


def _keep_outputs(layer, keep):
    import torch

    smaller = copy.deepcopy(layer)
    smaller.weight = torch.nn.Parameter(layer.weight.detach()[keep].clone())
    if layer.bias is not None:
        smaller.bias = torch.nn.Parameter(layer.bias.detach()[keep].clone())
    if isinstance(layer, torch.nn.Linear):
        smaller.out_features = len(keep)
    else:
        smaller.out_channels = len(keep)
    return smaller


def _keep_inputs(layer, keep, previous_outputs: int):
    import torch

    smaller = copy.deepcopy(layer)
    if isinstance(layer, torch.nn.Conv2d):
        smaller.weight = torch.nn.Parameter(layer.weight.detach()[:, keep].clone())
        smaller.in_channels = len(keep)
        return smaller
    per_channel = layer.in_features // previous_outputs  # features per channel after Flatten (1 for Linear)
    columns = (keep[:, None] * per_channel + torch.arange(per_channel)[None, :]).reshape(-1)
    smaller.weight = torch.nn.Parameter(layer.weight.detach()[:, columns].clone())
    smaller.in_features = len(columns)
    return smaller


def _keep_batchnorm(norm, keep):
    import torch

    smaller = copy.deepcopy(norm)
    smaller.num_features = len(keep)
    smaller.weight = torch.nn.Parameter(norm.weight.detach()[keep].clone())
    smaller.bias = torch.nn.Parameter(norm.bias.detach()[keep].clone())
    smaller.running_mean = norm.running_mean[keep].clone()
    smaller.running_var = norm.running_var[keep].clone()
    return smaller


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
