"""The Python snippets of docs/optimizing.md, run as a reader would: with the files they name made here."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from optimize.source import EmbeddingSource, ModelSource
from tests.docs.snippets import python_snippet

GUIDE = "docs/optimizing.md"


def load_snippet(tmp_path, monkeypatch, marker: str):
    """Write the snippet to tmp_path/<its first-line name> and import it from there, as from the current dir."""
    snippet = python_snippet(GUIDE, marker)
    file_name = snippet.splitlines()[0].removeprefix("# ").strip()
    (tmp_path / file_name).write_text(snippet)
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location(file_name.removesuffix(".py"), tmp_path / file_name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digits_split(tmp_path):
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    images = (images / 16).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=images[:1400], y=labels[:1400])
    np.savez(tmp_path / "val.npz", x=images[1400:], y=labels[1400:])
    return images, labels


def test_the_pytorch_snippet_builds_a_source_from_saved_weights(tmp_path, monkeypatch):
    import torch

    digits_split(tmp_path)
    torch.manual_seed(0)
    weights = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                  torch.nn.ReLU(), torch.nn.Linear(256, 10)).state_dict()
    torch.save(weights, tmp_path / "weights.pt")
    source = load_snippet(tmp_path, monkeypatch, "# my_model.py").my_source()
    assert isinstance(source, ModelSource) and source.name == "mymodel"
    assert source.example_input.shape == (8, 64) and len(source.train_inputs) == 1400
    assert torch.equal(source.module[0].weight, weights["0.weight"])


def test_the_keras_snippet_prunes_a_saved_model(tmp_path, monkeypatch):
    from optimize.keras_source import import_tf, missing_tf_message

    for module in ("tensorflow", "tf_keras", "tensorflow_model_optimization", "tf2onnx"):
        pytest.importorskip(module, reason=missing_tf_message(module))
    keras = import_tf().keras
    digits_split(tmp_path)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.save(tmp_path / "my_model.keras")
    source = load_snippet(tmp_path, monkeypatch, "# my_keras.py").my_keras_source()
    assert isinstance(source, ModelSource) and source.name == "mykeras"
    (pruning,) = [step for step in source.prior_steps if step.name == "prune_magnitude_keras"]
    assert pruning.settings["measured_sparsity"] == pytest.approx(0.75, abs=0.02)


def test_the_embedding_snippet_builds_a_source_from_a_model_directory(tmp_path, monkeypatch):
    from optimize.demos.minilm import minilm_path
    from optimize.demos.sentences import generate_sentences

    (tmp_path / "my-sentence-model").symlink_to(minilm_path(), target_is_directory=True)
    (tmp_path / "validation_sentences.txt").write_text("\n".join(generate_sentences(40, seed=1)))
    source = load_snippet(tmp_path, monkeypatch, "# my_embedder.py").my_embedder()
    assert isinstance(source, EmbeddingSource) and len(source.validation_texts) == 40
    import torch

    ids = torch.tensor([[101, 7592, 102]])
    embedding = source.module(ids, torch.ones_like(ids))
    assert embedding.shape == (1, 384) and torch.allclose(embedding.norm(dim=1), torch.ones(1), atol=1e-5)
    sys.modules.pop("my_embedder", None)


def test_the_several_inputs_snippet_builds_a_source():
    from tests.optimize.test_several_inputs import text_classifier, token_batch

    batch = token_batch(64, seed=0)
    names = {"ModelSource": ModelSource, "classifier": text_classifier(), "ids": batch["input_ids"],
             "mask": batch["attention_mask"], "labels": np.zeros(64, np.int64)}
    source = eval(python_snippet(GUIDE, 'name="reviews"'), names)  # the snippet is one expression
    assert source.input_names == ("input_ids", "attention_mask") and source.several_inputs
