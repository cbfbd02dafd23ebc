"""What a request's inputs must satisfy beyond each one's datatype and shape, read from the manifest.

onnxruntime checks each input against its own declared shape, not inputs against each other, nor token ids
against the table they index: a mismatched attention mask or an id past the vocabulary fails inside the model
with onnxruntime's own text. The manifest records the model's names for dynamic axes (`TensorSpec.dim_names`)
and the valid range of id inputs (`TensorSpec.value_range`); these checks turn both into a client's error
before the model runs. Older manifests have neither, and then nothing here applies.

Each function returns the problem as a message saying what was expected, or None; the caller answers 400.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from optimize.manifest import TensorSpec


def shared_axis_problem(shapes: Mapping[str, Sequence[int]], specs: Mapping[str, TensorSpec]) -> str | None:
    """The first named axis whose size differs between the inputs (or the places in one input) that share its
    name; `shapes` holds each input's shape as the request declares it, already checked against its spec."""
    first_seen: dict[str, tuple[str, int]] = {}  # axis name -> (input, size) where it first appeared
    for name, shape in shapes.items():
        axis_names = specs[name].dim_names
        if axis_names is None or len(axis_names) != len(shape):
            continue
        for axis, size in zip(axis_names, shape):
            if axis is None:
                continue
            seen_in, seen_size = first_seen.setdefault(axis, (name, size))
            if seen_size != size:
                return _disagreement(axis, seen_in, seen_size, name, size)
    return None


def _disagreement(axis: str, first: str, first_size: int, second: str, second_size: int) -> str:
    where = f"input {first!r}" if first == second else f"inputs {first!r} and {second!r}"
    return f"{where}: axis {axis!r} must have the same size, got {first_size} and {second_size}"


def id_range_problem(array: np.ndarray, spec: TensorSpec) -> str | None:
    """The first value of an id input outside the table it indexes (min and max first: one cheap pass each)."""
    if spec.value_range is None or array.size == 0 or array.dtype.kind not in "iu":
        return None
    lowest, highest = spec.value_range
    if lowest <= array.min() and array.max() <= highest:
        return None
    flat = array.ravel()
    index = int(np.flatnonzero((flat < lowest) | (flat > highest))[0])
    return (f"input {spec.name!r}: expected ids from {lowest} to {highest} (the embedding table's rows), "
            f"got {flat[index]} at flat index {index}")
