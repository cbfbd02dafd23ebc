"""LiteRT candidates in the optimizer: built beside onnxruntime's, measured and judged the same way, shipped as .tflite.

Which candidate wins depends on this CPU, so the tests assert what holds
whichever does: every LiteRT candidate is built, timed, scored and checked for
batch invariance; the shipped file is the chosen candidate's, with the runtime
that runs it; and a source LiteRT cannot convert gets a reason, not an error.
"""

import numpy as np
import pytest

from optimize.manifest import load_verified
from optimize.settings import OptimizeSettings

TFLITE = ("tflite_fp32", "tflite_dynamic_int8", "tflite_int8")


@pytest.fixture(scope="module")
def keras_artifact(keras_model, digits, tmp_path_factory):
    from optimize.keras_source import keras_source
    from optimize.pipeline import optimize_model

    _, _, test_x, test_y = digits
    work = tmp_path_factory.mktemp("keras-litert")
    source = keras_source(keras_model, (test_x, test_y), "digits-keras-litert", work_dir=work / "work")
    log = []
    settings = OptimizeSettings(candidates=("int8_dynamic", *TFLITE), latency_repeats=20)
    manifest = optimize_model(source, work / "artifact", settings, log=log.append)
    return manifest, work / "artifact", log


def test_every_litert_candidate_is_measured_and_judged_beside_onnxruntime(keras_artifact):
    manifest, _, _ = keras_artifact
    runtimes = {c.name: c.runtime for c in manifest.candidates}
    assert runtimes == {"fp32": "onnxruntime", "int8_dynamic": "onnxruntime",
                        **{name: "litert" for name in TFLITE}}
    for candidate in manifest.candidates:
        m = candidate.measurement
        stopped = "timed no further" in candidate.reason  # clearly slower at b1 (a busy or non-VNNI CPU)
        assert set(m.latency_ms) == ({1} if stopped else {1, 32}), candidate.name
        assert m.batch_deviation is not None and candidate.reason
    steps = {c.name: c.steps[-1].settings for c in manifest.candidates if c.runtime == "litert"}
    assert {name: settings["mode"] for name, settings in steps.items()} == {
        "tflite_fp32": "fp32", "tflite_dynamic_int8": "dynamic_int8", "tflite_int8": "full_int8"}


def test_litert_fp32_scores_what_the_onnx_fp32_scores(keras_artifact):
    manifest, _, _ = keras_artifact
    scores = {c.name: c.measurement.accuracy for c in manifest.candidates}
    assert abs(scores["tflite_fp32"] - scores["fp32"]) <= 1 / 450  # at most one of the 450 held-out rows flips


def test_litert_answers_do_not_depend_on_their_batch_mates(keras_artifact):
    manifest, _, _ = keras_artifact
    deviation = {c.name: c.measurement.batch_deviation for c in manifest.candidates}
    # fp32 rounding may differ with the batch's kernel tiling on another CPU: held to the export's parity tolerance
    assert deviation["tflite_fp32"] <= 1e-4
    assert deviation["tflite_int8"] <= 1e-4  # fixed, calibrated scales
    assert deviation["tflite_dynamic_int8"] <= 1e-4  # TFLite quantizes each input row on its own
    assert deviation["int8_dynamic"] > 1e-3  # onnxruntime's scales per batch: what the check is there to see


def test_the_shipped_file_is_the_chosen_candidates_with_its_runtime(keras_artifact):
    manifest, artifact, log = keras_artifact
    shipped = [c for c in manifest.candidates if c.accepted and c.measurement == manifest.after]
    chosen = shipped[0] if shipped else next(c for c in manifest.candidates if c.name == "fp32")
    assert manifest.runtime == chosen.runtime
    assert manifest.model_file == {"litert": "model.tflite", "onnxruntime": "model.onnx"}[chosen.runtime]
    assert [(t.name, t.shape) for t in manifest.inputs] == [("input", (-1, 64))]  # the same request, any engine
    load_verified(artifact)  # the sha256 is the shipped file's
    report = (artifact / "report.md").read_text()
    assert "| tflite_int8 | litert |" in report and "batch deviation" in report
    assert any("tflite_int8: building" in line for line in log)


def test_a_source_litert_cannot_convert_gets_a_reason(digits_source, tmp_path):
    from optimize.candidates import not_applicable
    from optimize.export import export_checked
    from optimize.source import ModelSource

    onnx_file = tmp_path / "digits.onnx"
    export_checked(digits_source, onnx_file, 1e-4)
    onnx_source = ModelSource("digits-onnx", "1", None, digits_source.example_input, digits_source.validation_inputs,
                              digits_source.validation_labels, onnx_file=onnx_file)
    assert "needs a Keras model or a PyTorch nn.Module" in not_applicable("tflite_int8", onnx_source)


def test_a_several_input_source_is_refused_with_a_reason(digits_source):
    import dataclasses

    from optimize.candidates import not_applicable

    rows = digits_source.validation_inputs
    two = dataclasses.replace(digits_source, example_input={"a": rows[:1], "b": rows[:1]},
                              validation_inputs={"a": rows, "b": rows}, train_inputs=None, calibration_inputs=None)
    assert "take one input" in not_applicable("tflite_fp32", two)


def test_serving_batch_sizes_are_powers_of_two_up_to_the_maximum():
    assert OptimizeSettings(serving_max_batch_size=24).serving_batch_sizes == (1, 2, 4, 8, 16, 24)
    assert np.all(np.diff(OptimizeSettings().serving_batch_sizes) > 0)


@pytest.fixture(scope="module")
def keras_workspace(keras_model, digits, tmp_path_factory):
    from optimize.candidates import Workspace
    from optimize.keras_source import keras_source

    _, _, test_x, test_y = digits
    work = tmp_path_factory.mktemp("keras-workspace")
    source = keras_source(keras_model, (test_x, test_y), "digits-keras-ws", work_dir=work)
    return Workspace(source, None, work, OptimizeSettings(), log=print)


def test_a_keras_model_the_converter_rejects_is_skipped_with_the_converters_reason(keras_workspace):
    import dataclasses

    from optimize.keras_source import import_tf
    from optimize.litert_candidates import CandidateSkipped, build_tflite

    t = import_tf()
    inputs = t.keras.Input((64,))
    determinant = t.keras.layers.Lambda(lambda x: t.tf.linalg.det(t.tf.reshape(x, (-1, 8, 8)))[:, None])(inputs)
    untranslatable = t.keras.Model(inputs, t.keras.layers.Dense(10)(determinant))  # no TFLite builtin for det
    ws = dataclasses.replace(keras_workspace, source=dataclasses.replace(keras_workspace.source,
                                                                        keras_model=untranslatable))
    with pytest.raises(CandidateSkipped, match=r"^ConverterError: .*MatrixDeterminant"):
        build_tflite(ws, "tflite_fp32")


def test_a_one_input_pytorch_source_given_as_a_dict_converts(digits_source, tmp_path):
    import dataclasses

    from optimize.candidates import Workspace
    from optimize.litert_candidates import build_tflite
    from optimize.tflite_session import TFLiteSession

    rows = digits_source.validation_inputs
    named = dataclasses.replace(digits_source, example_input={"input": rows[:1]}, validation_inputs={"input": rows},
                                train_inputs=None, calibration_inputs=None)
    ws = Workspace(named, None, tmp_path, OptimizeSettings(serving_max_batch_size=2), log=print)
    built = build_tflite(ws, "tflite_fp32")
    session = TFLiteSession(built.path, 1)
    assert session.batches == (1, 2)
    assert built.steps[-1].settings["max_abs_diff_to_torch"] <= 1e-4
