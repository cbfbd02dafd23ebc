"""PyTorch modules to TensorFlow Lite through litert-torch: one signature per batch size, fp32 and int8, checked
against PyTorch, every signature answering a row like batch 1, and a clear error where litert-torch cannot convert."""

import sys

import numpy as np
import pytest

pytest.importorskip("litert_torch", reason="pip install .[litert-torch]")
pytest.importorskip("ai_edge_quantizer", reason="pip install .[litert-torch]")

from optimize.export import ParityError  # noqa: E402
from optimize.litert_torch import LiteRTConversionError, torch_to_tflite  # noqa: E402
from optimize.tflite_session import TFLiteSession  # noqa: E402

MLP_SIZES = (1, 2, 4, 8, 16, 32)  # what the lead passes for a serving max batch of 32
CNN_SIZES = (1, 3, 8)  # fewer signatures convert faster; 3 checks a size that is not a power of two


def _trained(architecture, digits, epochs):
    from optimize.demos.digits import train_classifier
    from optimize.train import build

    return train_classifier(digits[0], digits[1], epochs=epochs, model=build(architecture))  # seeded


@pytest.fixture(scope="module")
def mlp(digits):
    from optimize.demos.digits import mlp

    return _trained(mlp, digits, epochs=5)  # the demo's MLP, fewer epochs than its 30 to keep the file fast


@pytest.fixture(scope="module")
def cnn(digits):
    from optimize.demos.digits import cnn

    return _trained(cnn, digits, epochs=3)


def _convert(module, digits, path, mode, sizes, converted_fp32=None):
    train_x, _, test_x, _ = digits
    return torch_to_tflite(module, test_x[0], path, mode, test_x, calibration_inputs=train_x,
                           batch_sizes=sizes, converted_fp32=converted_fp32)


@pytest.fixture(scope="module")
def mlp_files(mlp, digits, tmp_path_factory):
    """Each mode's (path, Step); the int8 modes quantize the fp32 file instead of converting again."""
    folder = tmp_path_factory.mktemp("litert_torch_mlp")
    fp32 = folder / "fp32.tflite"
    files = {"fp32": (fp32, _convert(mlp, digits, fp32, "fp32", MLP_SIZES))}
    for mode in ("dynamic_int8", "full_int8"):
        files[mode] = (folder / f"{mode}.tflite", _convert(mlp, digits, folder / f"{mode}.tflite", mode, MLP_SIZES,
                                                           converted_fp32=fp32))
    return files


@pytest.fixture(scope="module")
def cnn_files(cnn, digits, tmp_path_factory):
    """fp32, and full_int8 converted from the module itself (no fp32 file passed in)."""
    folder = tmp_path_factory.mktemp("litert_torch_cnn")
    return {mode: (folder / f"{mode}.tflite", _convert(cnn, digits, folder / f"{mode}.tflite", mode, CNN_SIZES))
            for mode in ("fp32", "full_int8")}


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_fp32_computes_what_pytorch_computes_within_1e_4(request, model):
    path, step = request.getfixturevalue(f"{model}_files")["fp32"]
    sizes = MLP_SIZES if model == "mlp" else CNN_SIZES
    assert step.name == "convert_tflite"
    assert step.settings["api"] == "litert_torch.convert" and step.settings["quantizer"] is None
    assert step.settings["max_abs_diff_to_torch"] <= 1e-4
    assert step.settings["signatures"] == " ".join(f"batch_{n}" for n in sizes)
    assert step.settings["bytes"] == path.stat().st_size
    assert TFLiteSession(path).batches == sizes


@pytest.mark.parametrize("model, mode", [("mlp", "dynamic_int8"), ("mlp", "full_int8"), ("cnn", "full_int8")])
def test_int8_modes_keep_pytorch_top1_class_on_held_out_rows(request, model, mode):
    from optimize.litert import MIN_INT8_TOP1_AGREEMENT

    settings = request.getfixturevalue(f"{model}_files")[mode][1].settings
    recipe = {"dynamic_int8": "dynamic_wi8_afp32", "full_int8": "static_wi8_ai8"}[mode]
    assert settings["quantizer"].startswith("ai-edge-quantizer ") and settings["quantizer"].endswith(recipe)
    assert settings["top1_agreement_with_torch"] >= MIN_INT8_TOP1_AGREEMENT
    assert settings["calibration_rows"] == (100 if mode == "full_int8" else None)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_full_int8_file_computes_in_int8_behind_float_io_and_is_smaller_than_fp32(request, model):
    from ai_edge_litert.interpreter import Interpreter

    files = request.getfixturevalue(f"{model}_files")
    path = files["full_int8"][0]
    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("batch_1")
    for detail in [*runner.get_input_details().values(), *runner.get_output_details().values()]:
        assert detail["dtype"] == np.float32
    assert sum(d["dtype"] == np.int8 for d in interpreter.get_tensor_details()) > 4  # weights and activations
    assert files["full_int8"][1].settings["io_type"] == "float32"
    assert path.stat().st_size < files["fp32"][0].stat().st_size / 2


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_full_int8_answers_every_calibration_row_without_clipping(request, digits, model):
    """The full range of the calibration rows, not ai-edge-quantizer's moving average, which clipped logits by
    up to 7 on these models (full range: 0.66 and 1.0): each row's logits stay within 10% of their span."""
    import torch

    from optimize.tflite_session import TFLiteSession

    module, path = request.getfixturevalue(model), request.getfixturevalue(f"{model}_files")["full_int8"][0]
    rows = digits[0][:100]  # the rows calibration drew
    with torch.no_grad():
        logits = module(torch.from_numpy(rows)).numpy()
    session = TFLiteSession(path, 1)
    got = session.run(None, {session.get_inputs()[0].name: rows})[0]
    span = float(logits.max() - logits.min())
    print(f"{model}: max error {np.abs(got - logits).max():.3f} over a logit span of {span:.1f}")
    assert np.abs(got - logits).max() <= 0.1 * span


@pytest.mark.parametrize("model, mode, tolerance", [
    # fp32: a signature's kernels may round otherwise on another CPU, so the export's parity tolerance.
    ("mlp", "fp32", 1e-4), ("cnn", "fp32", 1e-4),
    # Full integer: every signature was calibrated on the same rows (see optimize/litert_torch.py), so they
    # share scales and a row is answered alike (exactly, on an AMD EPYC; 0.05 leaves room for a range one ulp
    # apart on another CPU, where signatures calibrated on other rows differ by a logit or more).
    # Dynamic-range int8 quantizes each row on its own.
    ("mlp", "dynamic_int8", 1e-4), ("mlp", "full_int8", 0.05), ("cnn", "full_int8", 0.05),
])
def test_every_signature_answers_a_row_as_batch_1_does(request, digits, model, mode, tolerance):
    path = request.getfixturevalue(f"{model}_files")[mode][0]
    session = TFLiteSession(path, num_threads=1)
    name = session.get_inputs()[0].name
    rows = digits[2][:40]  # 40 rows: more than the largest signature, so they are cut into chunks
    alone = np.concatenate([session.run(None, {name: rows[i:i + 1]})[0] for i in range(len(rows))])
    for count in [*session.batches, session.batches[-1] + 1, len(rows)]:
        np.testing.assert_allclose(session.run(None, {name: rows[:count]})[0], alone[:count], rtol=0, atol=tolerance,
                                   err_msg=f"{count} rows")


def test_a_module_litert_torch_cannot_convert_raises_a_conversion_error_naming_it(digits, tmp_path):
    import torch

    class SignDependent(torch.nn.Module):  # data-dependent control flow: torch.export cannot trace it
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x - 1

    with pytest.raises(LiteRTConversionError) as caught:
        _convert(SignDependent(), digits, tmp_path / "m.tflite", "fp32", (1, 2))
    message = str(caught.value)
    assert "SignDependent" in message and "could not convert" in message and "litert-torch 0.10" in message
    assert "data-dependent" in message  # the library's own first line
    assert "\n" not in message and not (tmp_path / "m.tflite").exists()


def test_a_file_that_computes_something_else_raises_parity_error(mlp_files, digits, tmp_path):
    from optimize.demos.digits import mlp
    from optimize.train import build

    untrained = build(mlp, seed=1)  # quantizing the trained MLP's file, checked against another MLP
    with pytest.raises(ParityError, match="dynamic_int8 agrees with PyTorch on the top-1 class of"):
        _convert(untrained, digits, tmp_path / "m.tflite", "dynamic_int8", MLP_SIZES,
                 converted_fp32=mlp_files["fp32"][0])


def test_missing_litert_torch_says_how_to_install_it(digits, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # what `import litert_torch` sees when not installed
    with pytest.raises(ImportError, match=r"pip install \.\[litert-torch\]"):
        _convert(torch_module(), digits, tmp_path / "m.tflite", "fp32", (1,))


def torch_module():
    import torch

    return torch.nn.Linear(64, 10)


@pytest.mark.parametrize("mode, calibration, sizes, expected", [
    ("int4", None, (1,), "expected one of fp32, dynamic_int8, full_int8"),
    ("full_int8", None, (1,), "expected calibration_inputs"),
    ("fp32", None, (), "expected positive integers"),
    ("fp32", None, (0, 2), "expected positive integers"),
])
def test_arguments_are_checked_before_converting(digits, tmp_path, mode, calibration, sizes, expected):
    test_x = digits[2]
    with pytest.raises(ValueError, match=expected):
        torch_to_tflite(torch_module(), test_x[0], tmp_path / "m.tflite", mode, test_x, calibration, sizes)


def test_example_row_shape_is_checked_against_the_check_inputs(digits, tmp_path):
    test_x = digits[2]
    with pytest.raises(ValueError, match=r"expected shape \[64\].*got \[63\]"):
        torch_to_tflite(torch_module(), test_x[0, :63], tmp_path / "m.tflite", "fp32", test_x, None, (1,))
