"""Source-type dispatch, in one place: from what the user names to a source, from a source to its kind.

| the user names | source | optimized as |
|---|---|---|
| `model.onnx`, `model.pt`/`.pth` (TorchScript), with labelled data | ModelSource | a classifier |
| `package.module:function` returning a ModelSource | ModelSource | a classifier |
| `package.module:function` returning an EmbeddingSource | EmbeddingSource | a text-embedding model |

A ModelSource holds a PyTorch module, a TorchScript module or an ONNX file
(a Keras model arrives as one, through optimize.keras_source); its
`model_format` (optimize/source.py) decides how optimize/export.py exports it.
The kinds: optimize/classifier.py and optimize/embedding.py.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

import numpy as np

from optimize.classifier import Classifier
from optimize.embedding import Embedding
from optimize.kind import Kind
from optimize.settings import OptimizeSettings
from optimize.source import EmbeddingSource, ModelSource

KINDS = {ModelSource: Classifier, EmbeddingSource: Embedding}
MODEL_FILES = (".onnx", ".pt", ".pth")  # model files taken as they are, with labelled data


def is_model_file(reference: str) -> bool:
    return Path(reference).suffix in MODEL_FILES


def load_source(reference: str, data: str | None = None, name: str | None = None) -> ModelSource | EmbeddingSource:
    """A model file with its labelled `data` (named `name`, default the file's stem), or what
    `package.module:function` returns."""
    if is_model_file(reference):
        if data is None:
            raise ValueError(f"{reference} is a model file; expected labelled validation data for it too")
        return file_source(Path(reference), data, name or Path(reference).stem)
    return call_source_function(reference)


def call_source_function(reference: str) -> ModelSource | EmbeddingSource:
    """Call `package.module:function` and return the source it builds."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"model source: expected 'package.module:function', got {reference!r}")
    factory: Callable[[], object] = getattr(importlib.import_module(module_name), attribute)
    source = factory()
    if not isinstance(source, tuple(KINDS)):
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
        if len(session.get_inputs()) != 1:
            names = ", ".join(model_input.name for model_input in session.get_inputs())
            raise ValueError(f"{model_file} has {len(session.get_inputs())} inputs ({names}); expected one: models "
                             "with several inputs are not supported yet")
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


def kind_for(source: ModelSource | EmbeddingSource, settings: OptimizeSettings, log: Callable[[str], None]) -> Kind:
    """How the pipeline optimizes this source: as a classifier or as a text-embedding model."""
    for source_type, kind in KINDS.items():
        if isinstance(source, source_type):
            return kind(source, settings, log)
    raise TypeError(f"optimize: expected a ModelSource or an EmbeddingSource, got {type(source).__name__}")
