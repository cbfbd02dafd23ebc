"""What the optimizer takes in: a trained model and the data to check it with."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from optimize.manifest import Step
from optimize.measure import top1_accuracy

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelSource:
    """A trained classifier with held-out data to measure it on.

    The model is a PyTorch `nn.Module` (a TorchScript module too) or an
    existing ONNX file (`onnx_file`, with `module` None). `example_input` fixes
    the non-batch input shape; axis 0 is exported as a dynamic batch axis.
    `validation_labels` are class indices for top-1.
    """

    name: str
    version: str
    module: "torch.nn.Module | None"
    example_input: np.ndarray
    validation_inputs: np.ndarray
    validation_labels: np.ndarray
    input_name: str = "input"
    output_name: str = "logits"
    onnx_file: Path | None = None
    train_inputs: np.ndarray | None = None  # for fine-tuning after pruning, and distillation
    train_labels: np.ndarray | None = None
    calibration_inputs: np.ndarray | None = None  # static quantization; default: the training inputs
    student: "torch.nn.Module | None" = None  # distillation; default: the model with 75% of hidden units removed
    prior_steps: tuple[Step, ...] = ()  # what was done before the optimizer got the model (e.g. Keras pruning)
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
    def calibration(self) -> np.ndarray:
        for candidate in (self.calibration_inputs, self.train_inputs, self.validation_inputs):
            if candidate is not None:
                return candidate
        raise AssertionError("validation_inputs is required")

    def __post_init__(self) -> None:
        if (self.module is None) == (self.onnx_file is None):
            raise ValueError("model source: expected exactly one of a PyTorch module or an ONNX file")
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


def file_source(model_file: Path, data: str, name: str, version: str = "1") -> ModelSource:
    """A ModelSource from a saved model (`.onnx`, or a TorchScript `.pt`) and labelled data (see optimize.data)."""
    from optimize.data import check_fits, clean, load_arrays

    model_file = Path(model_file)
    inputs, labels = load_arrays(data)
    if labels is None:
        raise ValueError(f"data {data!r}: expected labels too (an .npz with 'labels' or 'y', or a callable "
                         "returning (inputs, labels)) to measure top-1 accuracy")
    cleaned = clean(inputs, labels)
    print(f"validation data: {cleaned.describe()}")
    if model_file.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
        (model_input,), output = session.get_inputs(), session.get_outputs()[0]
        shape = tuple(d if isinstance(d, int) else -1 for d in model_input.shape)
        check_fits(cleaned.inputs, model_input.name, shape, np.dtype(np.float32))
        return ModelSource(name, version, None, cleaned.inputs[:1], cleaned.inputs, cleaned.labels,
                           input_name=model_input.name, output_name=output.name, onnx_file=model_file)
    if model_file.suffix in (".pt", ".pth"):
        import torch

        module = torch.jit.load(str(model_file), map_location="cpu").eval()  # TorchScript: no pickle
        return ModelSource(name, version, module, cleaned.inputs[:1], cleaned.inputs, cleaned.labels)
    raise ValueError(f"{model_file}: expected an ONNX file (.onnx) or a TorchScript file (.pt)")
