"""serve's LiteRT runner over real .tflite files of both shapes: a Keras MLP converted with a dynamic batch axis,
a small torch CNN converted by litert-torch into batch_<N> signatures, and that CNN quantized by ai-edge-quantizer
to int8 inputs and outputs. Weights are seeded; rows are held-out digits."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from optimize.manifest import Manifest, Measurement, TensorSpec, TextInput, sha256_of, write_manifest
from serve.runtimes.litert_model import LiteRTModel

pytest.importorskip("ai_edge_litert", reason="the litert extra: pip install optiserve[litert]")
SIGNATURE_SIZES = (1, 2, 4, 8)
SEED = 0


def digit_rows(count: int) -> np.ndarray:
    """`count` held-out digits images, flattened to 64 floats in [0, 1]."""
    from optimize.demos.digits import load_split

    return load_split()[2][:count].astype(np.float32)


def keras_mlp():
    """A 64-32-10 Keras MLP, seeded weights, input `input` with a dynamic batch axis."""
    pytest.importorskip("tf_keras", reason="the tf extra: pip install optiserve[tf]")
    from optimize.keras_source import import_tf

    keras = import_tf().keras
    keras.utils.set_random_seed(SEED)
    return keras.Sequential([keras.layers.Input((64,), name="input"), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(10, name="logits")])


def write_keras_tflite(model, path: Path) -> Path:
    """What TFLiteConverter.from_keras_model writes: one signature, input [-1, 64]."""
    from optimize.keras_source import import_tf

    path.write_bytes(import_tf().tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def torch_cnn():
    """A conv net on 1x8x8 images answering (logits [n, 10], pooled features [n, 4]): two outputs by position."""
    torch = pytest.importorskip("torch")

    class TwoHeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.head = torch.nn.Linear(4 * 8 * 8, 10)

        def forward(self, images):
            features = torch.relu(self.conv(images))
            return self.head(features.flatten(1)), features.mean(dim=(2, 3))

    torch.manual_seed(SEED)
    return TwoHeads().eval()


def write_signature_tflite(module, path: Path) -> Path:
    """What optimize/litert_torch.py writes: one signature batch_<N> of fixed batch N per size."""
    pytest.importorskip("litert_torch", reason="the litert-torch extra: pip install optiserve[litert-torch]")
    import litert_torch
    import torch

    builder = litert_torch
    for size in SIGNATURE_SIZES:
        builder = builder.signature(f"batch_{size}", module, (torch.zeros(size, 1, 8, 8),))
    builder.convert().export(str(path))
    return path


def write_int8_io_tflite(float_path: Path, path: Path, calibration_rows: np.ndarray) -> Path:
    """ai-edge-quantizer's static int8 (weights and activations): int8 inputs and outputs with scales.

    The signatures share weight buffers, and ai-edge-quantizer keeps a moving average of each calibration batch's
    min/max: every signature is fed the same sequence (each row repeated to its size, as optimize/litert_torch.py
    does), or their scales differ and the shared buffers hold one signature's, so rows answer by batch size."""
    pytest.importorskip("ai_edge_quantizer", reason="the litert-torch extra: pip install optiserve[litert-torch]")
    from ai_edge_quantizer import quantizer, recipe

    images = calibration_rows.reshape(-1, 1, 8, 8)
    calibration = {f"batch_{size}": [{"args_0": np.repeat(image[None], size, axis=0)} for image in images]
                   for size in SIGNATURE_SIZES}
    quantize = quantizer.Quantizer(str(float_path), recipe.static_wi8_ai8())
    quantize.quantize(quantize.calibrate(calibration)).export_model(str(path), overwrite=True)
    return path


def write_litert_artifact(folder: Path, model_file: Path, name: str, inputs: tuple[TensorSpec, ...],
                          outputs: tuple[TensorSpec, ...]) -> Path:
    """An artifact directory holding `model_file` as model.tflite and a manifest with runtime litert."""
    folder.mkdir(parents=True, exist_ok=True)
    shipped = folder / "model.tflite"
    shipped.write_bytes(model_file.read_bytes())
    measured = Measurement(accuracy=1.0, latency_ms={1: 0.01}, size_bytes=shipped.stat().st_size)
    write_manifest(Manifest(
        name=name, version="1", runtime="litert", model_file="model.tflite", sha256=sha256_of(shipped),
        inputs=inputs, outputs=outputs, metric="none", steps=(), before=measured, after=measured,
        batch_deviation=0.0, machine="test", tool_versions={}, created_at="2026-12-03T00:00:00+00:00",
    ), folder)
    return folder


MLP_INPUTS = (TensorSpec(name="input", datatype="FP32", shape=(-1, 64)),)
MLP_OUTPUTS = (TensorSpec(name="logits", datatype="FP32", shape=(-1, 10)),)
CNN_INPUTS = (TensorSpec(name="images", datatype="FP32", shape=(-1, 1, 8, 8)),)
CNN_OUTPUTS = (TensorSpec(name="logits", datatype="FP32", shape=(-1, 10)),
               TensorSpec(name="features", datatype="FP32", shape=(-1, 4)))


@pytest.fixture(scope="module")
def rows():
    return digit_rows(40)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    model = keras_mlp()
    folder = tmp_path_factory.mktemp("litert")
    artifact = write_litert_artifact(folder / "mlp", write_keras_tflite(model, folder / "mlp.tflite"), "mlp",
                                     MLP_INPUTS, MLP_OUTPUTS)
    return model, artifact


@pytest.fixture(scope="module")
def cnn(tmp_path_factory, rows):
    module = torch_cnn()
    folder = tmp_path_factory.mktemp("litert")
    float_file = write_signature_tflite(module, folder / "cnn.tflite")
    int8_file = write_int8_io_tflite(float_file, folder / "cnn_int8.tflite", digit_rows(100))
    return (module, write_litert_artifact(folder / "cnn", float_file, "cnn", CNN_INPUTS, CNN_OUTPUTS),
            write_litert_artifact(folder / "cnn-int8", int8_file, "cnn-int8", CNN_INPUTS, CNN_OUTPUTS))


def load(artifact: Path, threads: int = 1) -> LiteRTModel:
    from optimize.manifest import load_verified

    manifest, model_path = load_verified(artifact)
    return LiteRTModel(manifest, model_path, threads)


def assert_every_row_alone_equals_in_batches(model: LiteRTModel, name: str, rows: np.ndarray, atol: float) -> None:
    """Each of 1..len(rows) as a batch (past the largest signature: in chunks) answers each row as it does alone."""
    alone = [model.run({name: rows[i:i + 1]}) for i in range(len(rows))]
    for size in range(1, len(rows) + 1):
        batched = model.run({name: rows[:size]})
        for output in model.output_names:
            assert batched[output].shape[0] == size
            expected = np.concatenate([answer[output] for answer in alone[:size]])
            np.testing.assert_allclose(batched[output], expected, atol=atol, err_msg=f"batch of {size}, {output}")


def test_keras_file_runs_resized_to_each_batch_and_answers_what_keras_does(mlp, rows):
    keras_model, artifact = mlp
    model = load(artifact)
    assert model.execution_provider == "litert:cpu (XNNPACK, 1 thread, dynamic batch)"
    assert model.on_cpu and model.output_names == ["logits"]
    answers = model.run({"input": rows})
    assert answers["logits"].dtype == np.float32
    np.testing.assert_allclose(answers["logits"], keras_model(rows, training=False).numpy(), atol=1e-5)


def test_keras_file_gives_every_row_its_own_answer_in_any_batch(mlp, rows):
    assert_every_row_alone_equals_in_batches(load(mlp[1]), "input", rows, atol=1e-5)


def test_signature_file_answers_what_torch_does_with_outputs_by_position(cnn, rows):
    import torch

    module, artifact, _ = cnn
    model = load(artifact, threads=2)
    assert model.execution_provider == "litert:cpu (XNNPACK, 2 threads, batch signatures 1..8)"
    images = rows[:13].reshape(-1, 1, 8, 8)  # 13 rows: a chunk of 8, then 5 padded to 8
    answers = model.run({"images": images})
    with torch.no_grad():
        logits, features = module(torch.from_numpy(images))
    assert answers["logits"].shape == (13, 10) and answers["features"].shape == (13, 4)
    np.testing.assert_allclose(answers["logits"], logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(answers["features"], features.numpy(), atol=1e-5)


def test_signature_file_gives_every_row_its_own_answer_in_batches_of_1_to_40(cnn, rows):
    assert_every_row_alone_equals_in_batches(load(cnn[1]), "images", rows.reshape(-1, 1, 8, 8), atol=1e-5)


def test_int8_io_file_takes_and_gives_float32_as_its_scales_say(cnn, rows):
    """Checked against the batch_1 signature run row by row, with the quantization written out here."""
    from ai_edge_litert.interpreter import Interpreter

    _, float_artifact, int8_artifact = cnn
    images = rows.reshape(-1, 1, 8, 8)
    got = load(int8_artifact).run({"images": images})  # 40 rows: chunks of 8
    runner = Interpreter(model_path=str(int8_artifact / "model.tflite")).get_signature_runner("batch_1")
    (scale, zero_point), outputs = runner.get_input_details()["args_0"]["quantization"], runner.get_output_details()
    assert runner.get_input_details()["args_0"]["dtype"] == np.int8 and scale > 0, "int8 inputs expected"
    by_hand = [runner(args_0=np.clip(np.round(row[None] / scale) + zero_point, -128, 127).astype(np.int8))
               for row in images]
    for output, key in (("logits", "output_0"), ("features", "output_1")):
        assert outputs[key]["dtype"] == np.int8, "int8 outputs expected"
        out_scale, out_zero = outputs[key]["quantization"]
        expected = np.concatenate([(answer[key].astype(np.float32) - out_zero) * out_scale for answer in by_hand])
        assert got[output].dtype == np.float32
        np.testing.assert_allclose(got[output], expected, rtol=0, atol=1e-7, err_msg=output)
    fp32 = load(float_artifact).run({"images": images})
    for output in ("logits", "features"):  # and close to the float file's answers (int8 noise, seeded weights)
        assert np.corrcoef(got[output].ravel(), fp32[output].ravel())[0, 1] > 0.9, output


def test_int8_io_file_is_batch_invariant(cnn, rows):
    # static scales: a row's quantized answer does not depend on its batch neighbours or padding
    assert_every_row_alone_equals_in_batches(load(cnn[2]), "images", rows.reshape(-1, 1, 8, 8), atol=1e-6)


@pytest.mark.parametrize("feed", [{}, {"x": None}, {"input": None, "extra": None}])
def test_a_missing_or_extra_input_name_is_refused_naming_the_expected_one(mlp, rows, feed):
    feed = {name: rows[:2] for name in feed}
    with pytest.raises(ValueError, match=r"expected input \['input'\]"):
        load(mlp[1]).run(feed)


def test_text_artifacts_are_refused(mlp, tmp_path):
    from optimize.manifest import load_verified

    manifest, path = load_verified(mlp[1])
    text = TextInput(tokenizer_sha256="0" * 64, max_length=8)
    with pytest.raises(ValueError, match="LiteRT artifacts take tensors, not text"):
        LiteRTModel(manifest.model_copy(update={"text_input": text}), path)


def test_a_manifest_naming_other_outputs_than_the_file_has_is_refused(mlp, tmp_path):
    artifact = write_litert_artifact(tmp_path / "wrong", mlp[1] / "model.tflite", "wrong", MLP_INPUTS, CNN_OUTPUTS)
    with pytest.raises(ValueError, match="manifest names 2 outputs"):
        load(artifact)


def test_a_manifest_declaring_other_input_rows_than_the_file_is_refused(mlp, tmp_path):
    rows_of_63 = (TensorSpec(name="input", datatype="FP32", shape=(-1, 63)),)
    artifact = write_litert_artifact(tmp_path / "wrong", mlp[1] / "model.tflite", "wrong", rows_of_63, MLP_OUTPUTS)
    with pytest.raises(ValueError, match=r"rows of shape \[63\], the .tflite file's input has \[64\]"):
        load(artifact)


def test_a_manifest_looser_than_the_files_fixed_rows_is_refused(mlp, tmp_path):
    """Rows of any size would pass the server's shape check, then fail in the file: refused at load, not a 500."""
    any_rows = (TensorSpec(name="input", datatype="FP32", shape=(-1, -1)),)
    artifact = write_litert_artifact(tmp_path / "loose", mlp[1] / "model.tflite", "loose", any_rows, MLP_OUTPUTS)
    with pytest.raises(ValueError, match=r"rows of shape \[-1\], the .tflite file's input has \[64\]"):
        load(artifact)


def test_without_ai_edge_litert_the_error_says_what_to_install(mlp, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import then raises ImportError
    with pytest.raises(ValueError, match=r"pip install optiserve\[litert\]"):
        load(mlp[1])


def test_load_model_runs_litert_artifacts_on_the_replica_thread_setting(mlp, rows):
    from serve.runtimes.model import load_model
    from serve.settings import ServeSettings

    model = load_model(mlp[1], 2, ServeSettings())
    assert isinstance(model, LiteRTModel) and "2 threads" in model.execution_provider
    assert model.run({"input": rows[:3]})["logits"].shape == (3, 10)


@pytest.mark.parametrize("which", ["mlp", "cnn", "cnn-int8"])
def test_the_optimizers_runner_answers_as_the_server_does(mlp, cnn, rows, which):
    """The optimizer times and checks files with its own runner (optimize/tflite_session.py; serve shares only the
    manifest with optimize): on every shape of file, both give the same answers at every batch size."""
    from optimize.tflite_session import TFLiteSession

    artifact = {"mlp": mlp[1], "cnn": cnn[1], "cnn-int8": cnn[2]}[which]
    served = load(artifact)
    timed = TFLiteSession(artifact / "model.tflite", 1, input_names=[served.manifest.inputs[0].name],
                          output_names=served.output_names)
    assert [n.name for n in timed.get_outputs()] == served.output_names
    inputs = rows if which == "mlp" else rows.reshape(-1, 1, 8, 8)
    for size in (1, 3, 8, 33):
        feed = {served.manifest.inputs[0].name: inputs[:size]}
        for got, expected in zip(timed.run(None, feed), served.run(feed).values()):
            np.testing.assert_array_equal(got, expected)
