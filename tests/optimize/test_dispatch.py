"""Source-type dispatch: models that arrive as files (an ONNX model, a TorchScript module; data from .npz),
`package.module:function` references, and which kind of pipeline a source gets."""

from dataclasses import replace

import numpy as np
import pytest

from optimize.manifest import load_verified
from optimize.classifier import Classifier
from optimize.dispatch import file_source, kind_for, load_source
from optimize.pipeline import optimize_model
from optimize.settings import OptimizeSettings

FAST = OptimizeSettings(latency_repeats=10)


@pytest.fixture(scope="module")
def validation_npz(tmp_path_factory, digits_source):
    path = tmp_path_factory.mktemp("data") / "validation.npz"
    inputs = digits_source.validation_inputs
    dirty = np.concatenate([inputs, inputs[:3], np.full((1, 64), np.nan, np.float32)])
    np.savez(path, inputs=dirty, labels=np.concatenate([digits_source.validation_labels,
                                                        digits_source.validation_labels[:3], [0]]))
    return path


def test_an_onnx_file_is_optimized_and_measured_like_an_exported_model(digits_artifact, validation_npz, tmp_path):
    source = file_source(digits_artifact / "model.onnx", str(validation_npz), "digits-onnx")
    manifest = optimize_model(source, tmp_path / "out", FAST, log=lambda _: None)
    assert load_verified(tmp_path / "out")[0] == manifest
    assert manifest.steps[0].settings["exporter"].startswith("none: the ONNX file")
    assert manifest.before.accuracy > 0.9  # a real classifier, not chance (0.1): a wide margin, it scores ~0.98


def test_a_torchscript_file_goes_through_the_torchscript_exporter(digits_source, validation_npz, tmp_path):
    import torch

    scripted = torch.jit.script(digits_source.module)
    torch.jit.save(scripted, tmp_path / "digits.pt")
    source = file_source(tmp_path / "digits.pt", str(validation_npz), "digits-ts")
    manifest = optimize_model(source, tmp_path / "out", FAST, log=lambda _: None)
    assert "TorchScript" in manifest.steps[0].settings["exporter"]
    assert manifest.steps[0].settings["parity_max_abs_diff"] <= 1e-4
    assert len(source.validation_inputs) == len(digits_source.validation_inputs)  # 3 duplicates, 1 NaN row dropped


def test_data_that_does_not_fit_the_onnx_model_fails_early(digits_artifact, tmp_path):
    np.savez(tmp_path / "wrong.npz", x=np.random.default_rng(0).random((4, 65), np.float32), y=np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"model expects shape \[-1, 64\], data has \[4, 65\]"):
        file_source(digits_artifact / "model.onnx", str(tmp_path / "wrong.npz"), "digits")


def test_a_model_file_without_data_is_refused_saying_what_is_missing(digits_artifact):
    with pytest.raises(ValueError, match="is a model file; expected labelled validation data"):
        load_source(str(digits_artifact / "model.onnx"))


def test_a_reference_must_name_a_function_that_returns_a_source():
    with pytest.raises(ValueError, match="expected 'package.module:function', got 'optimize.demos.digits'"):
        load_source("optimize.demos.digits")
    with pytest.raises(TypeError, match="os:getcwd: expected it to return a ModelSource, an EmbeddingSource or a TextClassifierSource, "
                                        "got str"):
        load_source("os:getcwd")


def test_a_classifier_source_gets_the_classifier_kind_and_anything_else_is_refused(digits_source):
    assert isinstance(kind_for(digits_source, FAST, print), Classifier)
    with pytest.raises(TypeError, match="expected a ModelSource, an EmbeddingSource or a TextClassifierSource, got dict"):
        kind_for({"module": digits_source.module}, FAST, print)


def test_the_model_format_decides_the_exporter(digits_source, digits_artifact, tmp_path):
    import torch

    from optimize.export import exporter_name

    scripted = replace(digits_source, module=torch.jit.script(digits_source.module))
    onnx_file = replace(digits_source, module=None, onnx_file=digits_artifact / "model.onnx")
    assert [s.model_format for s in (digits_source, scripted, onnx_file)] == ["pytorch", "torchscript", "onnx"]
    assert exporter_name(scripted) == "torch.onnx.export(dynamo=False), TorchScript input"
    assert exporter_name(onnx_file) == "none: the ONNX file model.onnx as given"
