"""Source-type dispatch, in one place: from what the user names to a source, from a source to its kind.

| the user names | source | optimized as |
|---|---|---|
| `model.onnx`, `model.pt`/`.pth` (TorchScript), with labelled data | ModelSource | a classifier |
| `package.module:function` returning a ModelSource | ModelSource | a classifier |
| `package.module:function` returning an EmbeddingSource | EmbeddingSource | a text-embedding model |
| `package.module:function` returning a TextClassifierSource | TextClassifierSource | a text classifier |
| a Hugging Face model directory, with labelled sentences | TextClassifierSource or EmbeddingSource (optimize/huggingface.py) | by its architecture |

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
from optimize.huggingface import huggingface_source, is_model_directory
from optimize.kind import Kind
from optimize.settings import OptimizeSettings
from optimize.source import EmbeddingSource, ModelSource, TextClassifierSource
from optimize.text_classifier import TextClassifier

KINDS = {ModelSource: Classifier, EmbeddingSource: Embedding, TextClassifierSource: TextClassifier}
MODEL_FILES = (".onnx", ".pt", ".pth")  # model files taken as they are, with labelled data


def is_model_file(reference: str) -> bool:
    return Path(reference).suffix in MODEL_FILES


def load_source(reference: str, data: str | None = None, name: str | None = None) -> ModelSource | EmbeddingSource:
    """A Hugging Face model directory or a model file with its labelled `data` (named `name`, default the
    directory's or file's name), or what `package.module:function` returns."""
    if is_model_directory(reference):
        if data is None:
            raise ValueError(f"{reference} is a Hugging Face model directory; expected labelled sentences for it "
                             "too (--data val.jsonl)")
        return huggingface_source(Path(reference), data, name or Path(reference).resolve().name)
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
        raise TypeError(f"{reference}: expected it to return a ModelSource, an EmbeddingSource or a "
                        "TextClassifierSource, "
                        f"got {type(source).__name__}")
    return source


# onnxruntime's input types -> the numpy dtype validation data must have for them
ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
              "tensor(bool)": np.bool_}


def file_source(model_file: Path, data: str, name: str, version: str = "1") -> ModelSource:
    """A ModelSource from a saved model (`.onnx`, or a TorchScript `.pt`) and labelled data (see optimize.data)."""
    model_file = Path(model_file)
    if model_file.suffix == ".onnx":
        return _onnx_file_source(model_file, data, name, version)
    if model_file.suffix in (".pt", ".pth"):
        import torch

        inputs, labels = _labelled(data, ())
        module = torch.jit.load(str(model_file), map_location="cpu").eval()  # TorchScript: no pickle
        return ModelSource(name, version, module, inputs[:1], inputs, labels)
    raise ValueError(f"{model_file}: expected an ONNX file (.onnx) or a TorchScript file (.pt)")


def _onnx_file_source(model_file: Path, data: str, name: str, version: str) -> ModelSource:
    import onnxruntime as ort

    from optimize.data import check_fits

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    model_inputs, output = session.get_inputs(), session.get_outputs()[0]
    names = tuple(model_input.name for model_input in model_inputs)
    inputs, labels = _labelled(data, names)
    feed = inputs if isinstance(inputs, dict) else {names[0]: inputs}
    for model_input in model_inputs:
        if model_input.type not in ORT_DTYPES:
            raise ValueError(f"{model_file}: input {model_input.name!r} has type {model_input.type}; expected one "
                             f"of {', '.join(ORT_DTYPES)}")
        shape = tuple(d if isinstance(d, int) else -1 for d in model_input.shape)
        check_fits(feed[model_input.name], model_input.name, shape, np.dtype(ORT_DTYPES[model_input.type]))
    dynamic = {model_input.name: {axis: str(d) for axis, d in enumerate(model_input.shape) if axis and not
                                  isinstance(d, int)} for model_input in model_inputs}
    if len(names) == 1:
        return ModelSource(name, version, None, feed[names[0]][:1], feed[names[0]], labels, input_name=names[0],
                           output_name=output.name, onnx_file=model_file, dynamic_axes=dynamic)
    example = {key: array[:1] for key, array in feed.items()}
    return ModelSource(name, version, None, example, feed, labels, output_name=output.name, onnx_file=model_file,
                       dynamic_axes=dynamic)


def _labelled(data: str, input_names: tuple[str, ...]):
    """Cleaned inputs and their labels from `data`, or a ValueError saying labels are needed."""
    from optimize.data import clean, load_arrays

    inputs, labels = load_arrays(data, input_names)
    if labels is None:
        raise ValueError(f"data {data!r}: expected labels too (an .npz with 'labels' or 'y', or a callable "
                         "returning (inputs, labels)) to measure top-1 accuracy")
    cleaned = clean(inputs, labels)
    print(f"validation data: {cleaned.describe()}")
    return cleaned.inputs, cleaned.labels


def kind_for(source: ModelSource | EmbeddingSource, settings: OptimizeSettings, log: Callable[[str], None]) -> Kind:
    """How the pipeline optimizes this source: as a classifier or as a text-embedding model."""
    for source_type, kind in KINDS.items():
        if isinstance(source, source_type):
            return kind(source, settings, log)
    raise TypeError(f"optimize: expected a ModelSource, an EmbeddingSource or a TextClassifierSource, got "
                    f"{type(source).__name__}")
