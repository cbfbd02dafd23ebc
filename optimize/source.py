"""What the optimizer takes in: a trained model and the data to check it with.

Two kinds of source: a classifier (`ModelSource`: a PyTorch module, a
TorchScript module or an ONNX file, with labelled inputs) and a text-embedding
model (`EmbeddingSource`: a module over token ids, its tokenizer, sentences).
optimize/dispatch.py tells them apart; nothing else does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np

from optimize.feeds import Feed, Inputs, as_feed, check_rows_agree, row_count
from optimize.manifest import Step
from optimize.measure import top1_accuracy

if TYPE_CHECKING:
    import torch

ModelFormat = Literal["onnx", "torchscript", "pytorch"]
SCORING_BATCH = 32  # sentences per call when embedding text is scored; the least an EmbeddingSource holds


@dataclass(frozen=True)
class ModelSource:
    """A trained classifier with held-out data to measure it on.

    The model is a PyTorch `nn.Module` (a TorchScript module too) or an
    existing ONNX file (`onnx_file`, with `module` None). Inputs are one array
    (a model with one input, called `input_name`) or a dict of arrays named as
    the model's inputs, in the order its `forward` takes them. `example_input`
    fixes the non-batch input shapes; axis 0 is exported as a dynamic batch
    axis, and `dynamic_axes` names any other dynamic axis (for token ids:
    `{"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}`).
    `validation_labels` are class indices for top-1.
    """

    name: str
    version: str
    module: "torch.nn.Module | None"
    example_input: Inputs
    validation_inputs: Inputs
    validation_labels: np.ndarray
    input_name: str = "input"
    output_name: str = "logits"
    onnx_file: Path | None = None
    train_inputs: Inputs | None = None  # for fine-tuning after pruning, and distillation
    train_labels: np.ndarray | None = None
    calibration_inputs: Inputs | None = None  # static quantization; default: the training inputs
    dynamic_axes: dict[str, dict[int, str]] | None = None  # besides axis 0 of every input (the batch)
    student: "torch.nn.Module | None" = None  # distillation; default: the model with 75% of hidden units removed
    prior_steps: tuple[Step, ...] = ()  # what was done before the optimizer got the model (e.g. Keras pruning)
    keras_model: object | None = None  # the Keras model `onnx_file` came from: LiteRT candidates convert it
    # The score every candidate is judged by: metric(outputs, validation_labels), higher is better.
    # None: top-1 accuracy of the outputs' argmax against class-index labels.
    metric: "Callable[[np.ndarray, np.ndarray], float] | None" = None

    def score(self, outputs: np.ndarray) -> float:
        if self.metric is None:
            return top1_accuracy(outputs, self.validation_labels)
        value = self.metric(outputs, self.validation_labels)
        if not np.isfinite(value):
            raise ValueError(f"{self.name}: the metric must return a finite number, got {value!r}")
        return float(value)

    @property
    def metric_name(self) -> str:
        return "top-1" if self.metric is None else getattr(self.metric, "__name__", "metric")

    @property
    def model_format(self) -> ModelFormat:
        """How the model came: an ONNX file, a TorchScript module or a PyTorch nn.Module. It decides how the
        model is exported (optimize/export.py) and which candidates apply (optimize/candidates.py)."""
        if self.module is None:
            return "onnx"
        import torch

        return "torchscript" if isinstance(self.module, torch.jit.ScriptModule) else "pytorch"

    @property
    def calibration(self) -> Inputs:
        for candidate in (self.calibration_inputs, self.train_inputs, self.validation_inputs):
            if candidate is not None:
                return candidate
        raise AssertionError("validation_inputs is required")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.example_input) if isinstance(self.example_input, dict) else (self.input_name,)

    @property
    def several_inputs(self) -> bool:
        return len(self.input_names) > 1

    def feed(self, inputs: Inputs) -> Feed:
        """`inputs` (one array or a dict) as named arrays."""
        return as_feed(inputs, self.input_name)

    @property
    def validation_feed(self) -> Feed:
        return self.feed(self.validation_inputs)

    def __post_init__(self) -> None:
        if (self.module is None) == (self.onnx_file is None):
            raise ValueError("model source: expected exactly one of a PyTorch module or an ONNX file")
        example = self.feed(self.example_input)
        for what, inputs in (("validation inputs", self.validation_inputs), ("training inputs", self.train_inputs),
                             ("calibration inputs", self.calibration_inputs)):
            if inputs is not None:
                self._check_fits(what, example, self.feed(inputs))
        rows = row_count(self.validation_feed)
        if rows != len(self.validation_labels):
            raise ValueError(
                f"validation: expected one label per input, got {len(self.validation_labels)} "
                f"labels for {rows} inputs"
            )

    def _check_fits(self, what: str, example: Feed, given: Feed) -> None:
        """Same input names as the example, the same rows in each, and the example's non-batch shape except
        along declared dynamic axes."""
        if set(given) != set(example):
            raise ValueError(f"{what}: expected arrays named {', '.join(example)}, got {', '.join(given)}")
        check_rows_agree(given, what)
        for name, array in given.items():
            dynamic = (self.dynamic_axes or {}).get(name, {})
            expected = ["-1" if axis == 0 or axis in dynamic else str(size)
                        for axis, size in enumerate(example[name].shape)]
            fits = array.ndim == len(expected) and all(
                want == "-1" or int(want) == got for want, got in zip(expected, array.shape))
            if not fits:
                label = what if len(example) == 1 else f"{what} {name!r}"
                raise ValueError(f"{label}: expected shape [{', '.join(expected)}], got {list(array.shape)}")


@dataclass(frozen=True)
class EmbeddingSource:
    """A PyTorch module taking (input_ids, attention_mask), its tokenizer, and held-out sentences."""

    name: str
    version: str
    module: "torch.nn.Module"
    tokenizer_file: Path
    max_length: int
    validation_texts: tuple[str, ...]
    calibration_texts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.validation_texts) < SCORING_BATCH:
            raise ValueError(f"validation_texts: expected at least {SCORING_BATCH} sentences, "
                             f"got {len(self.validation_texts)}")


@dataclass(frozen=True)
class TextClassifierSource:
    """A PyTorch module taking (input_ids, attention_mask) and giving class scores, its tokenizer, and labelled
    held-out sentences. The artifact takes strings, like an EmbeddingSource's; candidates are judged by top-1
    (or `metric`) against the labels."""

    name: str
    version: str
    module: "torch.nn.Module"
    tokenizer_file: Path
    max_length: int
    validation_texts: tuple[str, ...]
    validation_labels: np.ndarray
    train_texts: tuple[str, ...] = ()  # optional: static int8 calibration
    output_name: str = "logits"
    metric: "Callable[[np.ndarray, np.ndarray], float] | None" = None

    def __post_init__(self) -> None:
        if len(self.validation_texts) != len(self.validation_labels):
            raise ValueError(f"validation: expected one label per sentence, got {len(self.validation_labels)} "
                             f"labels for {len(self.validation_texts)} sentences")
        if len(self.validation_texts) < 2:
            raise ValueError(f"validation_texts: expected at least 2 sentences, got {len(self.validation_texts)}")
