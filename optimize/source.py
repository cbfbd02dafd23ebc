"""What the optimizer takes in: a trained model and the data to check it with."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelSource:
    """A trained PyTorch classifier with held-out data to measure it on.

    `example_input` fixes the non-batch input shape; axis 0 is exported as a
    dynamic batch axis. `validation_labels` are class indices for top-1.
    """

    name: str
    version: str
    module: "torch.nn.Module"
    example_input: np.ndarray
    validation_inputs: np.ndarray
    validation_labels: np.ndarray
    input_name: str = "input"
    output_name: str = "logits"

    def __post_init__(self) -> None:
        expected = self.example_input.shape[1:]
        if self.validation_inputs.shape[1:] != expected:
            raise ValueError(
                f"validation inputs: expected shape [-1, {', '.join(map(str, expected))}], "
                f"got {list(self.validation_inputs.shape)}"
            )
        if len(self.validation_inputs) != len(self.validation_labels):
            raise ValueError(
                f"validation: expected one label per input, got {len(self.validation_labels)} "
                f"labels for {len(self.validation_inputs)} inputs"
            )


def load_source(reference: str):
    """Call `package.module:function` and return the ModelSource it builds."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"model source: expected 'package.module:function', got {reference!r}")
    factory: Callable[[], ModelSource] = getattr(importlib.import_module(module_name), attribute)
    source = factory()
    from optimize.embedding import EmbeddingSource

    if not isinstance(source, (ModelSource, EmbeddingSource)):
        raise TypeError(f"{reference}: expected it to return a ModelSource or an EmbeddingSource, "
                        f"got {type(source).__name__}")
    return source
