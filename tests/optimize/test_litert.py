"""Keras to TensorFlow Lite: fp32, dynamic-range int8 and full-integer int8, checked against Keras and run at any batch."""

import warnings

import numpy as np
import pytest

from optimize.export import ParityError
from tests.optimize.test_keras import FAST_PRUNING


@pytest.fixture(scope="module")
def converted(keras_model, digits, tmp_path_factory):
    """Each mode's .tflite path and Step; representative rows come from the training split, checks from held-out."""
    from optimize.litert import MODES, keras_to_tflite

    folder = tmp_path_factory.mktemp("tflite")
    train_x, _, test_x, _ = digits
    return {mode: (folder / f"{mode}.tflite",
                   keras_to_tflite(keras_model, folder / f"{mode}.tflite", mode, test_x, representative_inputs=train_x))
            for mode in MODES}


def test_fp32_computes_what_keras_computes_within_1e_4(converted):
    step = converted["fp32"][1]
    assert step.settings["mode"] == "fp32"
    assert step.settings["max_abs_diff_to_keras"] <= 1e-4


@pytest.mark.parametrize("mode", ["dynamic_int8", "full_int8"])
def test_int8_modes_keep_keras_top1_class_on_held_out_rows(converted, mode):
    from optimize.litert import MIN_INT8_TOP1_AGREEMENT

    settings = converted[mode][1].settings
    assert settings["optimizations"] == "Optimize.DEFAULT"
    assert settings["top1_agreement_with_keras"] >= MIN_INT8_TOP1_AGREEMENT


def test_full_int8_runs_integer_ops_behind_float_inputs_and_outputs(converted):
    from optimize.litert import TFLiteSession

    path, step = converted["full_int8"]
    assert step.settings["supported_ops"] == "TFLITE_BUILTINS_INT8"
    assert step.settings["representative_rows"] == 100
    session = TFLiteSession(path)
    assert [(n.name, n.type, n.shape) for n in session.get_inputs()] == [("input", "tensor(float)", ["batch", 64])]
    assert [(n.type, n.shape) for n in session.get_outputs()] == [("tensor(float)", ["batch", 10])]
    assert _tensor_types(path) & {np.int8}, "a full-integer model holds int8 tensors"


def _tensor_types(path) -> set:
    from optimize.keras_source import import_tf

    with warnings.catch_warnings():  # TF 2.21 warns that tf.lite.Interpreter moves to ai_edge_litert
        warnings.simplefilter("ignore", UserWarning)
        interpreter = import_tf().tf.lite.Interpreter(model_path=str(path))
    return {detail["dtype"] for detail in interpreter.get_tensor_details()}


def test_full_int8_file_is_smaller_than_fp32(converted):
    assert converted["full_int8"][0].stat().st_size < converted["fp32"][0].stat().st_size / 2
    assert converted["full_int8"][1].settings["bytes"] == converted["full_int8"][0].stat().st_size


@pytest.mark.parametrize("mode", ["fp32", "dynamic_int8", "full_int8"])
def test_a_session_runs_batches_of_1_and_32_and_back_with_the_same_rows_answered_alike(converted, digits, mode):
    from optimize.litert import TFLiteSession

    session = TFLiteSession(converted[mode][0], num_threads=1)
    test_x = digits[2]
    alone = session.run(None, {"input": test_x[:1]})[0]
    batch = session.run(None, {"input": test_x[:32]})[0]
    again = session.run(None, {"input": test_x[:1]})[0]
    assert alone.shape == (1, 10) and batch.shape == (32, 10)
    np.testing.assert_array_equal(alone, again)
    # fp32 and full-integer int8 use fixed (calibrated) scales; TFLite's dynamic-range int8 quantizes each input
    # row with its own scale (measured: deviation 0 on digits), so every mode answers a row alike in any batch.
    np.testing.assert_allclose(alone[0], batch[0], atol=1e-5)


def test_the_pruned_stripped_keras_model_converts_in_fp32_and_full_int8(keras_model, digits, tmp_path):
    from optimize.keras_source import prune_keras
    from optimize.litert import keras_to_tflite

    train_x, train_y, test_x, _ = digits
    pruned, sparsity = prune_keras(keras_model, train_x, train_y, FAST_PRUNING)
    assert sparsity > 0.7
    step = keras_to_tflite(pruned, tmp_path / "pruned.tflite", "full_int8", test_x, representative_inputs=train_x)
    assert step.settings["top1_agreement_with_keras"] >= 0.97
    fp32 = keras_to_tflite(pruned, tmp_path / "pruned_fp32.tflite", "fp32", test_x)
    assert fp32.settings["max_abs_diff_to_keras"] <= 1e-4


def test_bad_arguments_say_what_was_expected(keras_model, digits, tmp_path):
    from optimize.litert import keras_to_tflite

    with pytest.raises(ValueError, match="expected one of fp32, dynamic_int8, full_int8, got 'int4'"):
        keras_to_tflite(keras_model, tmp_path / "m.tflite", "int4", digits[2])
    with pytest.raises(ValueError, match="expected representative_inputs"):
        keras_to_tflite(keras_model, tmp_path / "m.tflite", "full_int8", digits[2])


def test_a_feed_without_the_input_names_it(converted, digits):
    from optimize.litert import TFLiteSession

    with pytest.raises(KeyError, match="expected input 'input'"):
        TFLiteSession(converted["fp32"][0]).run(None, {"x": digits[2][:1]})


def test_a_model_that_drifts_from_keras_is_refused():
    from optimize.litert import check_against

    expected = np.eye(4, dtype=np.float32)
    with pytest.raises(ParityError, match="differs from Keras: max abs diff 0.01, expected at most 0.0001"):
        check_against(expected, expected + 0.01, "fp32", "Keras")
    with pytest.raises(ParityError, match="top-1 class of 50.0% of held-out rows, expected at least 97%"):
        check_against(expected, expected[[0, 1, 3, 2]], "full_int8", "Keras")
    assert check_against(expected, expected + 1e-5, "fp32", "Keras") == (pytest.approx(1e-5, rel=1e-2), 1.0)


def test_a_session_given_other_output_names_than_the_file_has_refuses(converted):
    from optimize.litert import TFLiteSession

    with pytest.raises(ValueError, match=r"expected 2 outputs \['a', 'b'\], the file has 1"):
        TFLiteSession(converted["fp32"][0], output_names=["a", "b"])
