"""Models that arrive as files: an existing ONNX model, a TorchScript module; data from .npz."""

import json

import numpy as np
import pytest

from optimize.manifest import load_verified
from optimize.pipeline import optimize_model
from optimize.settings import OptimizeSettings
from optimize.source import file_source

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
