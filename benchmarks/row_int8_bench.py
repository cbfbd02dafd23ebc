"""Per-row int8 (optimize/row_int8.py) against fp32 and onnxruntime's dynamic int8, on this CPU.

    .venv/bin/python benchmarks/row_int8_bench.py [--sentences 256] [--repeats 15] [--threads 1] [--no-digits]

all-MiniLM-L6-v2 on held-out sentences the optimizer never sees (seed 7),
then the digits MLP and CNN on their held-out split: size, batch-1 and
batch-32 latency (sessions timed in turn, medians), batch-32 throughput
against fp32, accuracy against fp32 (cosine mean and worst sentence; top-1
for digits) and batch deviation (largest abs difference between an input
alone and inside a full batch: for text, every probed sentence alone against
itself among the 31 longest sentences, i.e. the most padding). Per-row int8
is built three ways: as optimize/row_int8.py builds it here, with
onnxruntime's MatMulIntegerToFloat, and with the reduced weight range CPUs
without VNNI get.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimize import measure  # noqa: E402
from optimize.quantize import prepare, quantize_int8_dynamic  # noqa: E402
from optimize.report import cpu_flags  # noqa: E402
from optimize.row_int8 import quantize_int8_per_row  # noqa: E402

HELD_OUT_SEED = 7  # the optimizer validates on seed 1 and calibrates on seed 2
BATCH = 32
PER_ROW_VARIANTS = {  # the default (standard ops, weight range probed on this CPU), and the options
    "int8_per_row": {},
    "int8_per_row, MatMulIntegerToFloat": {"contrib_rescale": True},
    "int8_per_row, weights [-64, 64]": {"reduce_range": True},  # what a CPU without VNNI gets
}


@dataclass
class Row:
    name: str
    size: int
    latency: dict[int, float]
    mean: float
    worst: float | None  # None: one figure (top-1)
    deviation: float


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def build_variants(fp32: Path, work: Path) -> dict[str, Path]:
    prepare(fp32, work / "prepared.onnx")
    quantize_int8_dynamic(work / "prepared.onnx", work / "int8_dynamic.onnx")
    paths = {"fp32": fp32, "int8_dynamic (per tensor)": work / "int8_dynamic.onnx"}
    for name, options in PER_ROW_VARIANTS.items():
        paths[name] = work / f"{name.split(',')[0]}-{len(paths)}.onnx"
        quantize_int8_per_row(fp32, paths[name], **options)
    return paths


def text_deviation(run, texts: tuple[str, ...], probes: int) -> float:
    """Each probed sentence alone against itself first in a batch with the longest sentences."""
    longest = sorted(texts, key=len, reverse=True)[: BATCH - 1]
    deviation = 0.0
    for text in texts[:probes]:
        alone, crowded = run([text])[0], run([text, *longest])[0]
        deviation = max(deviation, float(np.max(np.abs(alone - crowded))))
    return deviation


def other_int8(work: Path, tokens, guarded: Path | None) -> dict[str, Path]:
    """onnxruntime static int8 (QDQ, MinMax, per-channel; calibrated on sentences the optimizer calibrates on,
    seed 2), and the guarded dynamic int8 of an earlier `make minilm` artifact where one is given."""
    from optimize.demos.sentences import generate_sentences
    from optimize.quantize import quantize_int8_static

    calibration = generate_sentences(4 * BATCH, seed=2)
    width = max(len(tokens.feed([text])["input_ids"][0]) for text in calibration)
    feeds = [{name: np.pad(array, ((0, 0), (0, width - array.shape[1])))
              for name, array in tokens.feed(calibration[i : i + BATCH]).items()}
             for i in range(0, len(calibration), BATCH)]
    quantize_int8_static(work / "prepared.onnx", work / "int8_static.onnx", feeds)
    paths = {"int8_static (QDQ, MinMax)": work / "int8_static.onnx"}
    if guarded is not None:
        paths["int8 guarded dynamic (earlier make minilm)"] = guarded
    return paths


def minilm_rows(args, work: Path) -> list[Row]:
    from optimize.demos.minilm import minilm_source
    from optimize.demos.sentences import generate_sentences
    from optimize.embedding import OUTPUT, Tokens, embed
    from optimize.export import export_token_model

    source = minilm_source(validation_count=BATCH)
    tokens, held_out = Tokens(source), tuple(generate_sentences(args.sentences, seed=HELD_OUT_SEED))
    fp32 = work / "minilm-fp32.onnx"
    export_token_model(source.module, tokens.feed(held_out[:2]), fp32, OUTPUT)
    paths = build_variants(fp32, work / "minilm")
    paths.update(other_int8(work / "minilm", tokens, args.guarded))
    sessions = {name: session(path, args.threads) for name, path in paths.items()}
    reference = embed(sessions["fp32"], tokens, held_out)
    latency = measure.interleaved_latency_ms(sessions, lambda b: tokens.feed(held_out[:b]), (1, BATCH), args.repeats)
    rows = []
    for name, model in sessions.items():
        cosines = measure.cosine_to(reference, embed(model, tokens, held_out))
        deviation = text_deviation(lambda texts, m=model: m.run(None, tokens.feed(texts))[0], held_out, args.probes)
        rows.append(Row(name, paths[name].stat().st_size, latency[name], float(cosines.mean()),
                        float(cosines.min()), deviation))
    return rows


def digits_rows(args, work: Path, make_source) -> list[Row]:
    from optimize.export import export_onnx

    source = make_source()
    fp32 = work / f"{source.name}-fp32.onnx"
    export_onnx(source, fp32)
    paths = build_variants(fp32, work / source.name)
    sessions = {name: session(path, args.threads) for name, path in paths.items()}
    inputs, labels = source.validation_inputs, source.validation_labels
    latency = measure.interleaved_latency_ms(
        sessions, measure.resized_feed({sessions["fp32"].get_inputs()[0].name: inputs}), (1, BATCH), args.repeats)
    rows = []
    for name, model in sessions.items():
        top1 = measure.top1_accuracy(measure.run(model, inputs), labels)
        rows.append(Row(name, paths[name].stat().st_size, latency[name], top1, None,
                        measure.batch_deviation(model, inputs, BATCH)))
    return rows


def print_table(title: str, rows: list[Row], metric: str) -> None:
    base, size = rows[0].latency[BATCH], rows[0].size
    print(f"\n{title}\n")
    print(f"| model | size MB | vs fp32 | b1 ms | b{BATCH} ms | b{BATCH} throughput vs fp32 | {metric} | "
          "batch deviation |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.name} | {row.size / 1e6:.2f} | {row.size / size:.0%} | {row.latency[1]:.3g} | "
              f"{row.latency[BATCH]:.3g} | {base / row.latency[BATCH]:.2f}x | "
              f"{row.mean:.4f}{'' if row.worst is None else f' / {row.worst:.4f}'} | {row.deviation:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=256, help="held-out sentences scored")
    parser.add_argument("--probes", type=int, default=64, help="sentences whose batch deviation is measured")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds per batch size")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--no-digits", action="store_true", help="MiniLM only")
    parser.add_argument("--guarded", type=Path, help="an earlier MiniLM artifact's model.onnx (guarded dynamic "
                        "int8) to time beside the others")
    args = parser.parse_args()
    print(f"{measure.cpu_name()} ({', '.join(cpu_flags())}), {os.cpu_count()} cores, {args.threads} thread(s), "
          f"{datetime.date.today()}, median of {args.repeats} interleaved runs")
    with tempfile.TemporaryDirectory(prefix="row-int8-bench-") as scratch:
        work = Path(scratch)
        for folder in ("minilm", "digits", "digits-cnn"):
            (work / folder).mkdir()
        print_table(f"all-MiniLM-L6-v2, {args.sentences} held-out sentences (seed {HELD_OUT_SEED})",
                    minilm_rows(args, work), "cosine to fp32 mean / worst")
        if not args.no_digits:
            from optimize.demos.digits import trained_digits_classifier, trained_digits_cnn

            for make_source in (trained_digits_classifier, trained_digits_cnn):
                rows = digits_rows(args, work, make_source)
                print_table(f"{make_source.__name__}, held-out digits", rows, "top-1 on held-out digits")


if __name__ == "__main__":
    main()
