"""Validation and calibration data from .npy/.npz files or a Python callable, cleaned and checked.

Rows holding NaN or Inf, and exact duplicate rows, are dropped and counted.
Inputs whose shape or dtype do not fit the model fail here, naming both.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimize.feeds import Inputs, as_feed, check_rows_agree, row_count, take_rows

INPUT_KEYS = ("inputs", "x", "X")
LABEL_KEYS = ("labels", "y", "Y")


@dataclass(frozen=True)
class CleanData:
    inputs: Inputs
    labels: np.ndarray | None
    dropped_nonfinite: int
    dropped_duplicates: int

    def describe(self) -> str:
        return (f"{row_count(as_feed(self.inputs, 'inputs'))} rows kept; dropped {self.dropped_nonfinite} with NaN/Inf and "
                f"{self.dropped_duplicates} exact duplicates")


def load_arrays(reference: str, input_names: tuple[str, ...] = ()) -> tuple[Inputs, np.ndarray | None]:
    """(inputs, labels or None) from `file.npy`, `file.npz` or `pkg.mod:function`.

    An .npz holds the inputs as one array named inputs/x (a model with one input) or as one array per model
    input named as the model's `input_names`, and the labels as labels/y.
    """
    path = Path(reference)
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False), None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            labels = next((archive[key] for key in LABEL_KEYS if key in archive), None)
            if len(input_names) > 1 or (input_names and input_names[0] in archive):
                return _named_arrays(archive, input_names, path), labels
            return _first_key(archive, INPUT_KEYS, path), labels
    module_name, _, attribute = reference.partition(":")
    if not attribute:
        raise ValueError(f"data: expected a .npy or .npz file or 'package.module:function', got {reference!r}")
    result = getattr(importlib.import_module(module_name), attribute)()
    inputs, labels = (result[0], result[1]) if isinstance(result, tuple) else (result, None)
    inputs = {name: np.asarray(array) for name, array in inputs.items()} if isinstance(inputs, dict) \
        else np.asarray(inputs)
    return inputs, None if labels is None else np.asarray(labels)


def _named_arrays(archive, names: tuple[str, ...], path: Path) -> dict[str, np.ndarray]:
    missing = [name for name in names if name not in archive]
    if missing:
        raise ValueError(f"{path}: expected one array per model input, named {', '.join(names)} (and labels), "
                         f"found {', '.join(archive.files)}")
    return {name: archive[name] for name in names}


def _first_key(archive, keys: tuple[str, ...], path: Path) -> np.ndarray:
    for key in keys:
        if key in archive:
            return archive[key]
    raise ValueError(f"{path}: expected an array named one of {', '.join(keys)}, found {', '.join(archive.files)}")


def clean(inputs: Inputs, labels: np.ndarray | None = None) -> CleanData:
    """Drop rows with NaN/Inf in any input, then exact duplicate rows (the first copy stays), and count both."""
    feed = as_feed(inputs, "inputs")
    check_rows_agree(feed, "data")
    rows = row_count(feed)
    if labels is not None and len(labels) != rows:
        raise ValueError(f"data: expected one label per input row, got {len(labels)} labels for {rows} rows")
    finite = np.ones(rows, bool)
    for array in feed.values():
        if np.issubdtype(array.dtype, np.floating):
            finite &= np.isfinite(array.reshape(rows, -1)).all(axis=1)
    keep = np.flatnonzero(finite)
    row_bytes = np.hstack([np.ascontiguousarray(array[keep]).reshape(len(keep), -1).view(np.uint8)
                           for array in feed.values()])
    _, first = np.unique(np.ascontiguousarray(row_bytes).view(np.void(row_bytes.shape[1])), return_index=True)
    keep = keep[np.sort(first)]
    kept = take_rows(feed, keep)
    return CleanData(
        inputs=kept if isinstance(inputs, dict) else kept["inputs"], labels=None if labels is None else labels[keep],
        dropped_nonfinite=int(rows - finite.sum()), dropped_duplicates=int(finite.sum() - len(keep)),
    )


def check_fits(inputs: np.ndarray, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Raise ValueError unless `inputs` fit the model input `name` (shape with -1 for dynamic axes, dtype)."""
    declared = "[" + ", ".join(str(d) for d in shape) + "]"
    fits = len(inputs.shape) == len(shape) and all(d == -1 or d == n for d, n in zip(shape, inputs.shape))
    if not fits:
        raise ValueError(f"data for input {name!r}: model expects shape {declared}, data has {list(inputs.shape)}")
    if inputs.dtype != dtype:
        raise ValueError(f"data for input {name!r}: model expects dtype {np.dtype(dtype).name}, data has "
                         f"{inputs.dtype.name}")
