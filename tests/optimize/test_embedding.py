"""Text-embedding models through the one pipeline, on a tiny real model and tokenizer built here (seconds).

The MiniLM artifact (tests/conftest.py) takes a minute to build; this model
takes the same path (token export, cosine scoring, the accuracy guard, the
tokenizer in the artifact, the torch.export program) in a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optimize.demos.sentences import generate_sentences
from optimize.embedding import Tokens, embed
from optimize.manifest import load_verified, sha256_of
from optimize.measure import open_session
from optimize.pipeline import optimize_model
from optimize.settings import OptimizeSettings
from optimize.source import EmbeddingSource

DIMENSIONS = 16


def tiny_text_source(directory: Path) -> EmbeddingSource:
    """A word-level tokenizer over the generated sentences' words, and embedding -> tanh -> linear -> mean
    pooling over the mask -> L2 normalization, with weights drawn from a fixed seed. One outlier weight
    makes plain int8 fail the cosine tolerance by construction, so the accuracy guard has work to do."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers

    texts = tuple(generate_sentences(40, seed=1))
    words = sorted({word for text in texts for word in text.replace(".", " . ").split()})
    vocabulary = {"[PAD]": 0, "[UNK]": 1, **{word: index for index, word in enumerate(words, 2)}}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))

    class TinyEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = torch.nn.Embedding(len(vocabulary), 32)
            self.projection = torch.nn.Linear(32, DIMENSIONS)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.projection(torch.tanh(self.table(input_ids)))
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = TinyEmbedding().eval()
    with torch.no_grad():  # one large weight, in the padding row no sentence reads: one int8 scale for the
        module.table.weight[0, 0] = 1000.0  # whole table rounds every real weight to zero
    return EmbeddingSource(name="tiny-text", version="1", module=module, tokenizer_file=directory / "tokenizer.json",
                           max_length=64, validation_texts=texts)


@pytest.fixture(scope="module")
def text_source(tmp_path_factory) -> EmbeddingSource:
    return tiny_text_source(tmp_path_factory.mktemp("tiny-text"))


SETTINGS = OptimizeSettings(latency_repeats=10)  # cosine to fp32: mean >= 0.99, worst >= 0.98


@pytest.fixture(scope="module")
def text_artifact(tmp_path_factory, text_source) -> Path:
    artifact = tmp_path_factory.mktemp("artifacts") / "tiny-text"
    optimize_model(text_source, artifact, SETTINGS, log=lambda _: None)
    return artifact


def test_a_text_artifact_takes_strings_and_carries_its_tokenizer(text_artifact, text_source):
    manifest, model_path = load_verified(text_artifact)
    assert manifest.metric == "cosine_to_fp32" and manifest.runtime == "onnxruntime"
    assert manifest.text_input.tokenizer_sha256 == sha256_of(text_source.tokenizer_file)
    assert manifest.text_input.max_length == 64
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [
        ("input_ids", "INT64", (-1, -1)), ("attention_mask", "INT64", (-1, -1))]
    assert [(t.name, t.datatype, t.shape) for t in manifest.outputs] == [("embedding", "FP32", (-1, DIMENSIONS))]
    served = embed(open_session(model_path), Tokens(text_source), text_source.validation_texts)
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)  # normalized in the graph


def test_the_export_matches_pytorch_within_the_recorded_tolerance(text_artifact):
    manifest, _ = load_verified(text_artifact)
    export = manifest.candidates[0].steps[0]
    assert export.name == "export_onnx" and export.settings["dynamic_axes"] == "batch, sequence"
    assert export.settings["parity_max_abs_diff"] <= export.settings["parity_tolerance"]


def test_per_row_int8_is_batch_invariant_and_keeps_the_tolerance(text_artifact):
    """Its own scale per row: the outlier in the padding row no sentence reads costs nothing, and a sentence's
    answer does not move with its batch-mates."""
    manifest, _ = load_verified(text_artifact)
    per_row = next(c for c in manifest.candidates if c.name == "int8_per_row")
    assert per_row.measurement.batch_deviation < 1e-5
    assert per_row.measurement.accuracy >= SETTINGS.cosine_mean_at_least
    assert per_row.measurement.worst >= SETTINGS.cosine_worst_at_least
    assert per_row.steps[-1].name == "quantize_int8_per_row"


def test_the_guard_escalates_past_plain_int8_and_every_verdict_follows_from_cosine(text_artifact):
    """Plain int8 rounds the table to zero (mean cosine ~0.83 here, far from 0.99); the guard's plan (nodes
    per-channel or kept float) holds, by its own measurement. Which one ships depends on this CPU's timings;
    the verdicts' grounds do not."""
    manifest, _ = load_verified(text_artifact)
    by_name = {c.name: c for c in manifest.candidates}
    assert list(by_name) == ["fp32", "int8_dynamic", "int8_per_row", "int8_guarded"]
    plain, guarded = by_name["int8_dynamic"], by_name["int8_guarded"]
    assert not plain.accepted and "outside tolerance" in plain.reason
    plan = guarded.steps[-1].settings
    assert plan["per_channel_nodes"] or plan["float_nodes"]
    assert guarded.measurement.accuracy >= SETTINGS.cosine_mean_at_least
    assert guarded.measurement.worst >= SETTINGS.cosine_worst_at_least
    faster = guarded.measurement.relative_latency <= 1 - SETTINGS.min_speedup \
        and guarded.measurement.relative_latency_range[1] < 1
    assert guarded.accepted is faster, guarded.reason  # accepted on cosine, then only if faster beyond the spread
    shipped = next(c for c in manifest.candidates if c.measurement == manifest.after)
    assert shipped.accepted and tuple(manifest.steps) == tuple(shipped.steps)


def test_a_gpu_target_ships_fp16_judged_on_cosine_alone(text_source, tmp_path):
    """As for classifiers: CPU timings of an fp16 model say nothing about a GPU."""
    manifest = optimize_model(text_source, tmp_path, OptimizeSettings(target="gpu", latency_repeats=10),
                              log=lambda _: None)
    fp16 = manifest.candidates[1]
    assert fp16.name == "fp16" and fp16.accepted and "judged on accuracy" in fp16.reason
    assert manifest.after == fp16.measurement and manifest.steps[-1].name == "convert_fp16"
    assert (tmp_path / "tokenizer.json").is_file() and manifest.text_input is not None


def test_the_torch_runtime_ships_the_module_as_a_program_with_dynamic_batch_and_sequence(text_source, tmp_path):
    import torch

    settings = OptimizeSettings(target="gpu", gpu_runtime="torch", latency_repeats=10)
    manifest = optimize_model(text_source, tmp_path, settings, log=lambda _: None)
    assert (manifest.runtime, manifest.model_file) == ("torch_export", "model.pt2")
    assert manifest.steps[-1].name == "export_program"
    assert manifest.steps[-1].settings["dynamic_axes"] == "batch, sequence"
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    feed = Tokens(text_source).feed(text_source.validation_texts[:5])
    with torch.no_grad():
        got = program(*(torch.from_numpy(a) for a in feed.values())).numpy()
        expected = text_source.module(*(torch.from_numpy(a) for a in feed.values())).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
