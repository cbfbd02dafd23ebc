"""Validation and calibration data from .npy/.npz files or a Python callable, cleaned and checked.

Rows holding NaN or Inf, and exact duplicate rows, are dropped and counted.
Inputs whose shape or dtype do not fit the model fail here, naming both.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INPUT_KEYS = ("inputs", "x", "X")
LABEL_KEYS = ("labels", "y", "Y")


@dataclass(frozen=True)
class CleanData:
    inputs: np.ndarray
    labels: np.ndarray | None
    dropped_nonfinite: int
    dropped_duplicates: int

    def describe(self) -> str:
        return (f"{len(self.inputs)} rows kept; dropped {self.dropped_nonfinite} with NaN/Inf and "
                f"{self.dropped_duplicates} exact duplicates")


def load_arrays(reference: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(inputs, labels or None) from `file.npy`, `file.npz` (keys inputs/x, labels/y) or `pkg.mod:function`."""
    path = Path(reference)
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False), None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            inputs = _first_key(archive, INPUT_KEYS, path)
            labels = next((archive[key] for key in LABEL_KEYS if key in archive), None)
            return inputs, labels
    module_name, _, attribute = reference.partition(":")
    if not attribute:
        raise ValueError(f"data: expected a .npy or .npz file or 'package.module:function', got {reference!r}")
    result = getattr(importlib.import_module(module_name), attribute)()
    if isinstance(result, tuple):
        return np.asarray(result[0]), np.asarray(result[1])
    return np.asarray(result), None


def _first_key(archive, keys: tuple[str, ...], path: Path) -> np.ndarray:
    for key in keys:
        if key in archive:
            return archive[key]
    raise ValueError(f"{path}: expected an array named one of {', '.join(keys)}, found {', '.join(archive.files)}")


def clean(inputs: np.ndarray, labels: np.ndarray | None = None) -> CleanData:
    """Drop rows with NaN/Inf, then exact duplicate rows (the first copy stays), and count both."""
    if labels is not None and len(labels) != len(inputs):
        raise ValueError(f"data: expected one label per input row, got {len(labels)} labels for {len(inputs)} rows")
    flat = inputs.reshape(len(inputs), -1)
    finite = np.isfinite(flat).all(axis=1) if np.issubdtype(inputs.dtype, np.floating) else np.ones(len(inputs), bool)
    keep = np.flatnonzero(finite)
    _, first = np.unique(np.ascontiguousarray(flat[keep]).view(np.void(flat.dtype.itemsize * flat.shape[1])),
                         return_index=True)
    keep = keep[np.sort(first)]
    return CleanData(
        inputs=inputs[keep], labels=None if labels is None else labels[keep],
        dropped_nonfinite=int(len(inputs) - finite.sum()), dropped_duplicates=int(finite.sum() - len(keep)),
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
