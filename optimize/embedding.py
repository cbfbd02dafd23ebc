"""Text-embedding models in the optimize pipeline: strings in, normalized vectors out.

The (token ids, mask) -> embedding module is exported with dynamic batch and
sequence axes and checked against PyTorch. Candidates are scored by cosine to
the fp32 embeddings on held-out sentences, against a tolerance on the mean and
the worst sentence; int8 is built under the accuracy guard (optimize/guard.py).
The artifact carries the tokenizer, so the server takes strings.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from optimize import measure
from optimize.artifact import Extras
from optimize.export import OPSET, ParityError, export_token_model
from optimize.guard import Score, Tolerance, guarded_int8_plan
from optimize.kind import Built, Program
from optimize.manifest import Measurement, Step, TextInput, sha256_of
from optimize.quantize import Int8Plan, prepare, quantize_int8_dynamic, weight_nodes
from optimize.row_int8 import guarded_per_row_int8
from optimize.selection import AccuracyProblem
from optimize.settings import OptimizeSettings
from optimize.source import SCORING_BATCH, EmbeddingSource, TextClassifierSource

OUTPUT = "embedding"
TOKENIZER_FILE = "tokenizer.json"


class Tokens:
    """The source's tokenizer, set up as the server will use it (truncate, pad to the longest)."""

    def __init__(self, source: EmbeddingSource | TextClassifierSource) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(source.tokenizer_file))
        self._tokenizer.enable_truncation(source.max_length)
        self._tokenizer.enable_padding()

    def feed(self, texts) -> dict[str, np.ndarray]:
        encodings = self._tokenizer.encode_batch(list(texts))
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }


def embed(session, tokens: Tokens, texts: tuple[str, ...], batch_size: int = SCORING_BATCH) -> np.ndarray:
    return np.concatenate([
        session.run(None, tokens.feed(texts[i : i + batch_size]))[0] for i in range(0, len(texts), batch_size)
    ])


def cosine_criterion(tolerance: Tolerance) -> AccuracyProblem:
    """A candidate fails if its cosine to the fp32 embeddings is outside the tolerance, on the mean or on
    the worst sentence."""
    def problem(measured: Measurement, _baseline: Measurement) -> tuple[str | None, str]:
        if tolerance.holds(Score(measured.accuracy, measured.worst)):
            return None, f"within tolerance ({tolerance})"
        return (f"cosine to fp32 mean {measured.accuracy:.4f}, worst {measured.worst:.4f}: "
                f"outside tolerance ({tolerance})"), ""

    return problem


class Embedding:
    """The text-embedding kind of optimize.kind.Kind."""

    metric = "cosine_to_fp32"
    prior_steps: tuple[Step, ...] = ()

    def __init__(self, source: EmbeddingSource, settings: OptimizeSettings, log: Callable[[str], None]) -> None:
        self.source, self.settings, self.log = source, settings, log
        self.tokens = Tokens(source)
        self.tolerance = Tolerance(settings.cosine_mean_at_least, settings.cosine_worst_at_least)
        self.accuracy_problem = cosine_criterion(self.tolerance)
        self._reference: np.ndarray | None = None  # the fp32 embeddings of the validation texts

    def export_fp32(self, work: Path) -> Built:
        path, texts = work / "fp32.onnx", self.source.validation_texts
        export_token_model(self.source.module, self.tokens.feed(texts[:2]), path, OUTPUT)
        self._reference = embed(measure.open_session(path), self.tokens, texts)
        return Built(path, [self._export_step()])

    def build_candidates(self, fp32: Built, work: Path) -> dict[str, Built]:
        """GPU target: fp16 (ONNX runtime); CPU: int8 under the accuracy guard, unless int8_candidates is off."""
        if self.settings.target == "gpu":
            steps = _gpu_candidates(fp32.path, work, self.settings, self.log)
        else:
            steps = self._int8_candidates(fp32.path, work) if self.settings.int8_candidates else {}
        return {name: Built(work / f"{name}.onnx", [*fp32.steps, step]) for name, step in steps.items()}

    def open(self, path: Path):
        return measure.open_session(path, self.settings.timing_threads)

    def feed(self, batch_size: int) -> dict[str, np.ndarray]:
        texts = self.source.validation_texts
        return self.tokens.feed(texts[i % len(texts)] for i in range(batch_size))

    def score(self, session) -> tuple[float, float]:
        cosines = measure.cosine_to(self._reference, embed(session, self.tokens, self.source.validation_texts))
        return float(cosines.mean()), float(cosines.min())

    def batch_deviation(self, session) -> float:
        return text_batch_deviation(session, self.tokens, self.source.validation_texts)

    def program(self) -> Program:
        """The module with dynamic batch and sequence axes on both inputs."""
        import torch

        feed = self.tokens.feed(self.source.validation_texts[:2])
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=512)
        return Program(self.source.module, tuple(torch.from_numpy(a) for a in feed.values()),
                       tuple({0: batch, 1: sequence} for _ in feed))

    def finish(self, fp32: Built, out_dir: Path) -> Extras:
        """The tokenizer beside the model, so the server takes strings."""
        return tokenizer_extras(self.source, out_dir)

    def _export_step(self) -> Step:
        import torch

        tolerance, texts = self.settings.parity_tolerance, self.source.validation_texts[:SCORING_BATCH]
        with torch.inference_mode():
            expected = self.source.module(*(torch.from_numpy(a) for a in self.tokens.feed(texts).values())).numpy()
        difference = float(np.max(np.abs(expected - self._reference[: len(texts)])))
        if not difference <= tolerance:
            raise ParityError(f"ONNX export differs from PyTorch: max abs diff {difference:.3g}, "
                              f"expected at most {tolerance:.3g}")
        self.log(f"ONNX vs PyTorch on {len(texts)} held-out sentences: max abs diff {difference:.2e}")
        return Step(name="export_onnx", settings={
            "exporter": "torch.onnx.export(dynamo=True)", "opset": OPSET, "dynamic_axes": "batch, sequence",
            "pooling": "mean over attention mask, then L2 normalization (in the graph)",
            "parity_max_abs_diff": difference, "parity_tolerance": tolerance,
        })

    def _int8_candidates(self, fp32: Path, work: Path) -> dict[str, Step]:
        """int8 with every weight per-tensor (plain dynamic), per-row int8 (batch-invariant) under its guard, and
        the dynamic guard's plan when it differs."""
        prepared = work / "prepared.onnx"
        prepare(fp32, prepared)
        nodes = weight_nodes(prepared)
        built = {"int8_dynamic": quantize_int8_dynamic(prepared, work / "int8_dynamic.onnx")}

        def score(path: Path) -> Score:
            return Score(*self.score(measure.open_session(path)))

        per_row, per_row_score = guarded_per_row_int8(fp32, work / "int8_per_row.onnx", score, self.tolerance, work,
                                                      self.log)
        if per_row is None:
            self.log(f"per-row int8: no plan holds {self.tolerance} (best mean {per_row_score.mean:.4f})")
        else:
            built["int8_per_row"] = per_row
        guard = guarded_int8_plan(prepared, nodes, score, self.tolerance, work, self.log)
        if guard.plan is None:
            self.log(f"accuracy guard: no int8 plan holds {self.tolerance} after {guard.tried} trials; "
                     "int8 not shipped")
        elif guard.plan != Int8Plan():
            built["int8_guarded"] = quantize_int8_dynamic(prepared, work / "int8_guarded.onnx", plan=guard.plan,
                                                          nodes=nodes)
            self.log(f"accuracy guard: {guard.plan.describe()} after {guard.tried} trials")
        return built


def _gpu_candidates(fp32: Path, work: Path, settings: OptimizeSettings, log) -> dict[str, Step]:
    """GPU target: fp16 for the ONNX runtime (the torch runtime ships the module itself)."""
    if settings.gpu_runtime != "onnxruntime":
        return {}
    from optimize.gpu import convert_fp16

    if settings.tensorrt_engine:
        log("TensorRT engine: not built for token models (dynamic sequence axis); the fp16 ONNX model serves on "
            "onnxruntime's TensorRT or CUDA provider")
    return {"fp16": convert_fp16(fp32, work / "fp16.onnx")}


def tokenizer_extras(source: EmbeddingSource | TextClassifierSource, out_dir: Path) -> Extras:
    """The tokenizer copied beside the model and the manifest's TextInput: the server then takes strings."""
    shutil.copyfile(source.tokenizer_file, out_dir / TOKENIZER_FILE)
    text_input = TextInput(tokenizer_sha256=sha256_of(out_dir / TOKENIZER_FILE), max_length=source.max_length)
    return Extras(text_input=text_input, files=(TOKENIZER_FILE,))


def text_batch_deviation(session, tokens: Tokens, texts: tuple[str, ...], probes: int = 8) -> float:
    """Largest abs difference between a sentence's answer alone and inside a full batch.

    Two batches per sentence: its own validation batch, and one where its
    neighbours are the longest sentences (most padding). Dynamic int8 derives
    activation scales from the whole batch, so its answers move with them.
    """
    sample = texts[:SCORING_BATCH]
    alone = np.concatenate([session.run(None, tokens.feed([text]))[0] for text in sample])
    deviation = float(np.max(np.abs(alone - embed(session, tokens, sample))))
    longest = sorted(texts, key=len, reverse=True)[: SCORING_BATCH - 1]
    for index, text in enumerate(sample[:probes]):
        crowded = session.run(None, tokens.feed([text, *longest]))[0][0]
        deviation = max(deviation, float(np.max(np.abs(alone[index] - crowded))))
    return deviation
