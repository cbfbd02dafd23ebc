"""Models with several named inputs (token ids and an attention mask), through every path that takes them:
a PyTorch module with dict inputs, an ONNX file with one array per input in --data, and the candidates."""

import argparse

import numpy as np
import onnxruntime as ort
import pytest

from optimize import cli
from optimize.manifest import load_verified
from optimize.pipeline import optimize_model
from optimize.settings import OptimizeSettings
from optimize.source import ModelSource
from tests.optimize.test_graph_facts import two_input_text_model

VOCABULARY, LENGTH = 50, 12


def token_batch(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCABULARY, (rows, LENGTH), dtype=np.int64)
    lengths = rng.integers(3, LENGTH + 1, rows)
    mask = (np.arange(LENGTH)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def text_classifier():
    """Embedding, mean over real tokens, a linear layer: BERT's shape of inputs, not nn.Sequential."""
    import torch

    class TextClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(VOCABULARY, 16)
            self.head = torch.nn.Linear(16, 3)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            mask = attention_mask.unsqueeze(-1).to(torch.float32)
            pooled = (self.embedding(input_ids) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            return self.head(pooled)

    torch.manual_seed(0)
    return TextClassifier().eval()


def two_input_source() -> ModelSource:
    import torch

    model, validation = text_classifier(), token_batch(256, seed=1)
    with torch.no_grad():  # labels: what fp32 answers, so fp32 scores 1.0 and any candidate's loss shows
        labels = model(*(torch.from_numpy(a) for a in validation.values())).argmax(dim=1).numpy()
    sequence = {1: "sequence"}
    return ModelSource(name="tokens", version="1", module=model, example_input=token_batch(4, seed=0),
                       validation_inputs=validation, validation_labels=labels,
                       calibration_inputs=token_batch(64, seed=2),
                       dynamic_axes={"input_ids": sequence, "attention_mask": sequence})


def test_a_two_input_module_is_exported_quantized_and_described(tmp_path):
    logged = []
    settings = OptimizeSettings(candidates=("int8_dynamic", "int8_static", "sparse"), latency_repeats=10)
    manifest = optimize_model(two_input_source(), tmp_path, settings, log=logged.append)
    ids, mask = manifest.inputs
    assert (ids.name, ids.dim_names, ids.value_range) == ("input_ids", ("batch", "sequence"), (0, VOCABULARY - 1))
    assert (mask.name, mask.dim_names, mask.value_range) == ("attention_mask", ("batch", "sequence"), None)
    by_name = {c.name: c for c in manifest.candidates}
    assert list(by_name) == ["fp32", "int8_dynamic", "int8_static"] and by_name["fp32"].measurement.accuracy == 1.0
    assert any("sparse: skipped" in line and "input_ids, attention_mask" in line for line in logged)
    assert by_name["int8_static"].measurement.batch_deviation < 1e-4  # fixed scales, whatever the batch
    export = by_name["fp32"].steps[0].settings
    assert export["dynamic_axes"] == ("input_ids: batch (axis 0), sequence (axis 1); "
                                      "attention_mask: batch (axis 0), sequence (axis 1)")
    load_verified(tmp_path)
    session = ort.InferenceSession(str(tmp_path / manifest.model_file), providers=["CPUExecutionProvider"])
    longer = {name: np.pad(array, ((0, 0), (0, 4))) for name, array in token_batch(3, seed=5).items()}  # 16 tokens
    assert session.run(None, longer)[0].shape == (3, 3)


def parse(*args: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(args))


@pytest.fixture
def onnx_with_two_inputs(tmp_path):
    model = two_input_text_model(tmp_path / "model.onnx", vocabulary=VOCABULARY)
    validation = token_batch(128, seed=3)
    labels = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, validation)[0].argmax(1)
    return model, validation, labels


def test_an_onnx_file_with_two_inputs_takes_one_array_per_input(tmp_path, onnx_with_two_inputs, capsys):
    model, validation, labels = onnx_with_two_inputs
    np.savez(tmp_path / "val.npz", labels=labels, **validation)
    assert cli.main(parse(str(model), "--data", str(tmp_path / "val.npz"), "--out", str(tmp_path / "out"),
                          "--latency-repeats", "10")) == 0
    manifest, _ = load_verified(tmp_path / "out")
    assert [spec.name for spec in manifest.inputs] == ["input_ids", "attention_mask"]
    assert manifest.before.accuracy == 1.0 and manifest.name == "model"


def test_arrays_not_named_as_the_inputs_are_refused_naming_them(tmp_path, onnx_with_two_inputs, capsys):
    model, validation, labels = onnx_with_two_inputs
    np.savez(tmp_path / "val.npz", x=validation["input_ids"], labels=labels)
    assert cli.main(parse(str(model), "--data", str(tmp_path / "val.npz"), "--out", str(tmp_path / "out"))) == 2
    line = capsys.readouterr().err.strip()
    assert "expected one array per model input, named input_ids, attention_mask (and labels), found x, labels" \
        in line, line


def test_inputs_with_different_row_counts_are_refused():
    source = two_input_source()
    short = dict(source.validation_inputs, attention_mask=source.validation_inputs["attention_mask"][:-1])
    with pytest.raises(ValueError, match="expected every input to have the same number of rows, got input_ids 256, "
                                         "attention_mask 255"):
        ModelSource(name="x", version="1", module=source.module, example_input=source.example_input,
                    validation_inputs=short, validation_labels=source.validation_labels,
                    dynamic_axes=source.dynamic_axes)
