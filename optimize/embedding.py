"""The optimize stage for text-embedding models: strings in, normalized vectors out.

Export the (token ids, mask) -> embedding module, check it against PyTorch,
build int8 candidates under the accuracy guard (cosine to the fp32
embeddings), time them side by side at the serving batch sizes, and ship the
fastest that holds the tolerance and is not slower than fp32. The artifact
carries the tokenizer, so the server takes strings.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from optimize import measure
from optimize.export import OPSET, ParityError, export_token_model
from optimize.guard import Score, Tolerance, guarded_int8_plan
from optimize.manifest import Candidate, Manifest, Measurement, Step, TextInput, sha256_of, write_manifest
from optimize.quantize import prepare, quantize_int8_dynamic, weight_nodes
from optimize.report import write_report
from optimize.settings import OptimizeSettings

if TYPE_CHECKING:
    import torch

OUTPUT = "embedding"
SCORING_BATCH = 32


@dataclass(frozen=True)
class EmbeddingSource:
    """A PyTorch module taking (input_ids, attention_mask), its tokenizer, and held-out sentences."""

    name: str
    version: str
    module: "torch.nn.Module"
    tokenizer_file: Path
    max_length: int
    validation_texts: tuple[str, ...]
    calibration_texts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.validation_texts) < SCORING_BATCH:
            raise ValueError(f"validation_texts: expected at least {SCORING_BATCH} sentences, "
                             f"got {len(self.validation_texts)}")


class Tokens:
    """The source's tokenizer, set up as the server will use it (truncate, pad to the longest)."""

    def __init__(self, source: EmbeddingSource) -> None:
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


def optimize_embedding_model(
    source: EmbeddingSource, out_dir: Path, settings: OptimizeSettings, log: Callable[[str], None] = print
) -> Manifest:
    """Build fp32 and guarded int8 candidates, keep the fastest within tolerance, write the artifact."""
    from optimize.pipeline import choose_candidate, describe_candidate, tensor_specs, tool_versions

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokens = Tokens(source)
    tolerance = Tolerance(settings.cosine_mean_at_least, settings.cosine_worst_at_least)
    with tempfile.TemporaryDirectory(prefix="optiserve-") as work_dir:
        work = Path(work_dir)
        paths, steps = {"fp32": work / "fp32.onnx"}, {}
        export_token_model(source.module, tokens.feed(source.validation_texts[:2]), paths["fp32"], OUTPUT)
        reference = embed(measure.open_session(paths["fp32"]), tokens, source.validation_texts)
        steps["fp32"] = [_export_step(source, tokens, reference, settings.parity_tolerance, log)]
        if settings.target == "gpu":
            int8 = _gpu_candidates(paths["fp32"], work, settings, log)
        else:
            int8 = _int8_candidates(paths["fp32"], work, source, tokens, reference, tolerance, log) \
                if settings.int8_candidates else {}
        for name, step in int8.items():
            paths[name] = work / f"{name}.onnx"
            steps[name] = [steps["fp32"][0], step]
        sessions = {name: measure.open_session(path) for name, path in paths.items()}
        measurements = _measure(sessions, paths, source, tokens, reference, settings, log)
        candidates = [c.model_copy(update={"steps": tuple(steps[c.name])}) for c in _judge(measurements, tolerance)]
        for candidate in candidates:
            log(describe_candidate(candidate))
        chosen = choose_candidate(candidates, settings, log)
        deviation = measurements[chosen].batch_deviation
        log(f"batch deviation of the shipped model: {deviation:.2e} (each sentence alone vs inside a padded batch)")
        model_file, shipped = _ship(paths[chosen], steps[chosen], source, tokens, settings, out_dir)
        shutil.copyfile(source.tokenizer_file, out_dir / "tokenizer.json")
    manifest = Manifest(
        name=source.name, version=source.version, sha256=sha256_of(out_dir / model_file),
        model_file=model_file, runtime="torch_export" if model_file.endswith(".pt2") else "onnxruntime",
        target=settings.target,
        inputs=tensor_specs(sessions[chosen].get_inputs()), outputs=tensor_specs(sessions[chosen].get_outputs()),
        text_input=TextInput(tokenizer_sha256=sha256_of(out_dir / "tokenizer.json"), max_length=source.max_length),
        metric="cosine_to_fp32", steps=tuple(shipped), before=measurements["fp32"],
        after=measurements[chosen], candidates=tuple(candidates), batch_deviation=deviation,
        machine=measure.cpu_name(), tool_versions=tool_versions(),
        created_at=_now(),
    )
    write_manifest(manifest, out_dir)
    log(f"wrote {out_dir / model_file} ({chosen}, target {settings.target}), tokenizer.json and manifest.json")
    report = write_report(manifest, out_dir)
    log(f"report: {', '.join(path.name for path in report)}")
    return manifest


def _export_step(source: EmbeddingSource, tokens: Tokens, reference: np.ndarray, tolerance: float, log) -> Step:
    import torch

    texts = source.validation_texts[:SCORING_BATCH]
    with torch.inference_mode():
        expected = source.module(*(torch.from_numpy(a) for a in tokens.feed(texts).values())).numpy()
    difference = float(np.max(np.abs(expected - reference[: len(texts)])))
    if not difference <= tolerance:
        raise ParityError(f"ONNX export differs from PyTorch: max abs diff {difference:.3g}, "
                          f"expected at most {tolerance:.3g}")
    log(f"ONNX vs PyTorch on {len(texts)} held-out sentences: max abs diff {difference:.2e}")
    return Step(name="export_onnx", settings={
        "exporter": "torch.onnx.export(dynamo=True)", "opset": OPSET, "dynamic_axes": "batch, sequence",
        "pooling": "mean over attention mask, then L2 normalization (in the graph)",
        "parity_max_abs_diff": difference, "parity_tolerance": tolerance,
    })


def _gpu_candidates(fp32: Path, work: Path, settings: OptimizeSettings, log) -> dict[str, Step]:
    """GPU target: fp16 for the ONNX runtime (the torch runtime ships the module itself)."""
    if settings.gpu_runtime != "onnxruntime":
        return {}
    from optimize.gpu import convert_fp16

    if settings.tensorrt_engine:
        log("TensorRT engine: not built for token models (dynamic sequence axis); the fp16 ONNX model serves on "
            "onnxruntime's TensorRT or CUDA provider")
    return {"fp16": convert_fp16(fp32, work / "fp16.onnx")}


def _ship(path: Path, steps: list[Step], source, tokens, settings: OptimizeSettings, out_dir: Path):
    """The chosen ONNX file, or for the GPU torch runtime a torch.export program of the module."""
    if settings.target == "gpu" and settings.gpu_runtime == "torch":
        import torch

        from optimize.gpu import PROGRAM_FILE, export_program

        feed = tokens.feed(source.validation_texts[:2])
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=512)
        step = export_program(source.module, tuple(torch.from_numpy(a) for a in feed.values()),
                              tuple({0: batch, 1: sequence} for _ in feed), out_dir / PROGRAM_FILE)
        return PROGRAM_FILE, [*steps, step]
    shutil.copyfile(path, out_dir / "model.onnx")
    return "model.onnx", steps


def _int8_candidates(fp32: Path, work: Path, source, tokens, reference, tolerance, log) -> dict[str, Step]:
    """int8 with every weight per-tensor (plain dynamic), and the guard's plan when it differs."""
    from optimize.quantize import Int8Plan

    prepared = work / "prepared.onnx"
    prepare(fp32, prepared)
    nodes = weight_nodes(prepared)
    built = {"int8_dynamic": quantize_int8_dynamic(prepared, work / "int8_dynamic.onnx")}

    def score(path: Path) -> Score:
        cosines = measure.cosine_to(reference, embed(measure.open_session(path), tokens, source.validation_texts))
        return Score(float(cosines.mean()), float(cosines.min()))

    guard = guarded_int8_plan(prepared, nodes, score, tolerance, work, log)
    if guard.plan is None:
        log(f"accuracy guard: no int8 plan holds {tolerance} after {guard.tried} trials; int8 not shipped")
    elif guard.plan != Int8Plan():
        built["int8_guarded"] = quantize_int8_dynamic(prepared, work / "int8_guarded.onnx", plan=guard.plan,
                                                      nodes=nodes)
        log(f"accuracy guard: {guard.plan.describe()} after {guard.tried} trials")
    return built


def _measure(sessions, paths, source, tokens, reference, settings: OptimizeSettings, log) -> dict[str, Measurement]:
    texts = source.validation_texts
    log(f"timing {', '.join(sessions)} at batch sizes {settings.batch_sizes}, interleaved, "
        f"{settings.latency_repeats} repeats each")
    latencies = measure.interleaved_latency_ms(
        sessions, lambda batch_size: tokens.feed(texts[i % len(texts)] for i in range(batch_size)),
        settings.batch_sizes, settings.latency_repeats,
    )
    measurements = {}
    for name, session in sessions.items():
        cosines = measure.cosine_to(reference, embed(session, tokens, texts))
        measurements[name] = Measurement(
            accuracy=float(cosines.mean()), worst=float(cosines.min()), latency_ms=latencies[name],
            size_bytes=paths[name].stat().st_size, batch_deviation=_batch_deviation(session, tokens, texts),
        )
    return measurements


def _judge(measurements: dict[str, Measurement], tolerance: Tolerance) -> list[Candidate]:
    from optimize.pipeline import judge

    def cosine_problem(measured: Measurement, _baseline: Measurement) -> tuple[str | None, str]:
        if tolerance.holds(Score(measured.accuracy, measured.worst)):
            return None, f"within tolerance ({tolerance})"
        return (f"cosine to fp32 mean {measured.accuracy:.4f}, worst {measured.worst:.4f}: "
                f"outside tolerance ({tolerance})"), ""

    return judge(measurements, cosine_problem)


def _batch_deviation(session, tokens: Tokens, texts: tuple[str, ...], probes: int = 8) -> float:
    """Largest abs difference between a sentence embedded alone and inside a full batch.

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


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).isoformat()
