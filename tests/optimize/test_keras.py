"""Keras models: tf2onnx export checked against Keras, tfmot pruning, the pruned model through optimize_model."""

import sys

import numpy as np
import pytest

from optimize.keras_source import TF_PACKAGES, PruningSettings, import_tf, missing_tf_message

FAST_PRUNING = PruningSettings(final_sparsity=0.75, end_step=200, frequency=100, epochs=10)


@pytest.fixture(scope="module")
def pruned(keras_model, digits):
    from optimize.keras_source import prune_keras

    return prune_keras(keras_model, digits[0], digits[1], FAST_PRUNING)


def top1(model, inputs, labels) -> float:
    return float((model(inputs, training=False).numpy().argmax(axis=1) == labels).mean())


def kernel_zeros(model) -> list[float]:
    return [float((layer.kernel.numpy() == 0).mean()) for layer in model.layers if hasattr(layer, "kernel")]


def test_a_missing_tensorflow_names_the_extra_to_install(monkeypatch):
    assert "pip install .[tf]" in missing_tf_message("tf2onnx")
    assert all(package in missing_tf_message("tf2onnx") for package in TF_PACKAGES)
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # `import tf2onnx` now fails as if it were not installed
    with pytest.raises(ImportError, match=r"(tensorflow|tf2onnx) is not installed\. Install them with: pip install "
                                          r"\.\[tf\]"):
        import_tf()


def test_pruning_settings_that_never_reach_their_end_step_fail_before_training():
    with pytest.raises(ValueError, match="end_step 1000 is never reached: 2 epochs of 1347 rows"):
        PruningSettings(end_step=1000, epochs=2).check_reachable(1347)
    with pytest.raises(ValueError, match="multiple of frequency 100"):
        PruningSettings(end_step=150)


def test_the_onnx_export_computes_what_keras_computes_at_any_batch_size(keras_model, digits, tmp_path):
    import onnxruntime as ort

    from optimize.export import ParityError
    from optimize.keras_source import keras_to_onnx

    test_x = digits[2]
    difference = keras_to_onnx(keras_model, tmp_path / "model.onnx", "input", test_x)
    assert difference <= 1e-5
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert not isinstance(session.get_inputs()[0].shape[0], int)  # dynamic batch axis
    for rows in (1, 7, len(test_x)):
        expected = keras_model(test_x[:rows], training=False).numpy()
        np.testing.assert_allclose(session.run(None, {"input": test_x[:rows]})[0], expected, atol=1e-5)
    with pytest.raises(ParityError, match="differs from Keras"):
        keras_to_onnx(keras_model, tmp_path / "again.onnx", "input", test_x, tolerance=-1.0)


def test_pruning_reaches_the_asked_sparsity_and_still_classifies(keras_model, pruned, digits):
    stripped, measured = pruned
    zeros = kernel_zeros(stripped)
    assert len(zeros) == 3 and all(abs(z - 0.75) < 0.01 for z in zeros), zeros  # every Dense kernel, from the weights
    assert measured == pytest.approx(0.75, abs=0.01)
    assert all(z < 0.01 for z in kernel_zeros(keras_model))  # the given model is left as it was
    assert not any("prune" in layer.name for layer in stripped.layers)  # wrappers stripped
    # How much top-1 fine-tuning keeps is where a training run lands on this CPU (0.978 -> 0.971 on an AMD
    # EPYC): the optimizer's tolerance judges it. Asserted here, with a wide margin: both still classify
    # (chance is 0.1).
    before, after = top1(keras_model, digits[2], digits[3]), top1(stripped, digits[2], digits[3])
    assert before > 0.9 and after > 0.9, (before, after)


def test_the_pruned_keras_artifact_records_pruning_and_its_compressed_size(keras_model, digits, tmp_path):
    from optimize.keras_source import keras_source
    from optimize.manifest import load_verified
    from optimize.pipeline import optimize_model
    from optimize.settings import OptimizeSettings

    train_x, train_y, test_x, test_y = digits
    source = keras_source(keras_model, (test_x, test_y), "digits-keras", pruning=FAST_PRUNING,
                          train_data=(train_x, train_y), work_dir=tmp_path / "work")
    manifest = optimize_model(source, tmp_path / "out", OptimizeSettings(latency_repeats=10), log=lambda _: None)
    assert load_verified(tmp_path / "out")[0] == manifest
    prune, export = manifest.steps[:2]
    assert prune.name == "prune_magnitude_keras" and export.name == "export_keras_onnx"
    assert prune.settings["schedule"] == "PolynomialDecay" and prune.settings["final_sparsity"] == 0.75
    assert prune.settings["measured_sparsity"] == pytest.approx(0.75, abs=0.01)
    before, after = prune.settings["compressed_bytes_before_pruning"], prune.settings["compressed_bytes_after_pruning"]
    assert after < 0.6 * before, (before, after)  # zeros compress...
    assert "not a speedup" in prune.settings["compressed_bytes_note"]  # ...and that is all they give
    assert export.settings["parity_max_abs_diff"] <= 1e-5
    assert manifest.before.accuracy > 0.9  # a sanity check with a wide margin: a working classifier (~0.97)
    assert [c.name for c in manifest.candidates][:2] == ["fp32", "int8_dynamic"]


def test_a_saved_keras_file_and_npz_data_make_a_source(keras_model, digits, tmp_path):
    from optimize.keras_source import keras_source

    keras_model.save(tmp_path / "digits.keras")
    np.savez(tmp_path / "validation.npz", x=digits[2], y=digits[3])
    source = keras_source(tmp_path / "digits.keras", str(tmp_path / "validation.npz"), "digits-file",
                          work_dir=tmp_path / "work")
    assert [step.name for step in source.prior_steps] == ["export_keras_onnx"]
    assert source.onnx_file.exists() and source.module is None and source.output_name == "logits"
    assert source.validation_inputs.shape == digits[2].shape
