"""LiteRT (ai-edge-litert, XNNPACK) against onnxruntime on this CPU, the same models built the optimizer's way.

    .venv/bin/python benchmarks/litert_bench.py [--models mlp cnn keras] [--threads 1 2] [--repeats 200]
        [--artifacts DIR] [--minilm [--minilm-repeats 20]] [--quick]

Each model's candidates are made by the optimizer's own builders (optimize/classifier.py,
optimize/candidates.py): the fp32 ONNX export, onnxruntime's dynamic and static int8, and the LiteRT
candidates in fp32, dynamic-range int8 and full-integer int8 (TFLiteConverter for the Keras demo,
litert-torch and ai-edge-quantizer for the PyTorch digits MLP and CNN). Each is opened as the optimizer
times it (optimize's TFLiteSession for .tflite) on each thread count: file size, batch-1 and batch-32
latency (every candidate timed in turn, A B A B, medians), top-1 on the held-out digits, batch deviation
(a row alone against the same row inside batches). `--artifacts DIR` also optimizes the digits MLP twice,
once among onnxruntime's candidates and once among LiteRT's, and prints the benchmarks/ab_bench.py command
that serves both. `--minilm` tries all-MiniLM-L6-v2 through litert-torch and says whether it converts.
`--quick` (the test's path): the Keras MLP trained 2 epochs, unpruned, 20 repeats.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimize import measure  # noqa: E402
from optimize.report import cpu_flags  # noqa: E402

BATCH = 32
ONNX_CANDIDATES = ("int8_dynamic", "int8_static")
LITERT_CANDIDATES = ("tflite_fp32", "tflite_dynamic_int8", "tflite_int8")
VERSIONS = ("onnxruntime", "ai-edge-litert", "litert-torch", "ai-edge-quantizer", "tensorflow")


@dataclass
class Row:
    name: str
    size: int = 0
    latency: dict[int, dict[int, float]] | None = None  # threads -> batch size -> ms
    top1: float = 0.0
    deviation: float = 0.0
    skipped: str = ""

    @property
    def engine(self) -> str:
        return "LiteRT" if self.name.startswith("tflite") else "onnxruntime"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sources(names: list[str], quick: bool) -> dict:
    """name -> a function making the trained (seeded) demo model as the optimizer takes it."""
    from optimize.demos import digits, keras_digits

    def keras_quick():
        from optimize.keras_source import keras_source

        train_x, train_y, test_x, test_y = digits.load_split()
        model = keras_digits.train_keras_classifier(train_x, train_y, epochs=2)
        return keras_source(model, (test_x, test_y), "digits-keras")

    if quick:
        return {"keras (2 epochs, unpruned)": keras_quick}
    makers = {"mlp": digits.trained_digits_classifier, "cnn": digits.trained_digits_cnn,
              "keras": keras_digits.pruned_keras_digits}
    return {name: makers[name] for name in names}


def build(source, work: Path):
    """fp32 and every candidate the optimizer can make for `source` here, with why any could not be made."""
    from optimize.candidates import BUILDERS, Workspace, not_applicable
    from optimize.classifier import Classifier
    from optimize.litert_candidates import CandidateSkipped
    from optimize.settings import OptimizeSettings

    settings = OptimizeSettings(candidates=ONNX_CANDIDATES + LITERT_CANDIDATES)
    fp32 = Classifier(source, settings, log).export_fp32(work)
    workspace, skipped = Workspace(source, fp32, work, settings, log), {}
    for name in settings.candidates:
        reason = not_applicable(name, source)
        try:
            if reason is None:
                workspace.built[name] = BUILDERS[name](workspace)
        except CandidateSkipped as why:
            reason = str(why)
        if reason is not None:
            skipped[name] = reason
    return {"fp32": fp32, **workspace.built}, skipped


def measured_rows(source, built: dict, skipped: dict, threads: list[int], repeats: int) -> list[Row]:
    from optimize.classifier import Classifier
    from optimize.settings import OptimizeSettings

    latency = {}
    for count in threads:  # sessions of one thread count timed together, interleaved
        kind = Classifier(source, OptimizeSettings(timing_threads=count), log)
        sessions = {name: kind.open(made.path) for name, made in built.items()}
        latency[count] = measure.interleaved_latency_ms(sessions, kind.feed, (1, BATCH), repeats)
    rows = [Row(name, made.path.stat().st_size, {count: latency[count][name] for count in threads},
                kind.score(sessions[name])[0], kind.batch_deviation(sessions[name]))
            for name, made in built.items()]
    return rows + [Row(name, skipped=reason) for name, reason in skipped.items()]


def print_table(title: str, rows: list[Row], threads: list[int], metric: str = "top-1") -> None:
    base = rows[0]  # fp32 on onnxruntime
    timed = " | ".join(f"b1 ms ({t}t) | b{BATCH} ms ({t}t)" for t in threads)
    print(f"\n#### {title}\n")
    print(f"| engine | candidate | size KB | {timed} | b{BATCH} vs ort fp32 ({threads[0]}t) | {metric} | "
          "batch deviation |")
    print("|---|---|---|" + "---|---|" * len(threads) + "---|---|---|")
    for row in sorted(rows, key=lambda r: (r.engine != "onnxruntime", r.skipped != "")):
        if row.skipped:
            print(f"| {row.engine} | {row.name} | skipped: {row.skipped} |" + " |" * (2 * len(threads) + 3))
            continue
        cells = " | ".join(f"{row.latency[t][1]:.3f} | {row.latency[t][BATCH]:.3f}" for t in threads)
        speedup = base.latency[threads[0]][BATCH] / row.latency[threads[0]][BATCH]
        print(f"| {row.engine} | {row.name} | {row.size / 1e3:.0f} | {cells} | {speedup:.2f}x | {row.top1:.4f} | "
              f"{row.deviation:.1e} |")


def fastest(rows: list[Row], engine: str, threads: int) -> str:
    """The candidate of `engine` with the least geometric-mean latency over batch 1 and 32 whose top-1 is within
    the optimizer's default tolerance of fp32's."""
    from optimize.settings import OptimizeSettings

    tolerance, base = OptimizeSettings().accuracy_tolerance, rows[0].top1
    usable = [r for r in rows if r.engine == engine and not r.skipped and base - r.top1 <= tolerance]
    if not usable:
        raise SystemExit(f"--artifacts: no {engine} candidate was made and kept top-1 within {tolerance} of fp32")
    return min(usable, key=lambda r: math.log(r.latency[threads][1]) + math.log(r.latency[threads][BATCH])).name


def write_artifacts(source, rows: list[Row], built: dict, out: Path, threads: int) -> None:
    """The MLP optimized among onnxruntime's candidates and among LiteRT's best, and the A/B command for both."""
    from optimize.manifest import read_manifest, sha256_of, write_manifest
    from optimize.pipeline import optimize_model
    from optimize.settings import OptimizeSettings

    paths = {"onnxruntime": out / "digits-onnxruntime", "litert": out / "digits-litert"}
    optimize_model(source, paths["onnxruntime"], OptimizeSettings(candidates=ONNX_CANDIDATES), log)
    best = fastest(rows, "LiteRT", threads)
    manifest = optimize_model(source, paths["litert"], OptimizeSettings(candidates=(best,)), log)
    if manifest.runtime != "litert":  # the pipeline found it no faster than fp32: ship the LiteRT file anyway
        print(f"\nthe optimizer did not ship {best} (not faster than fp32 on this run); the artifact gets it anyway")
        target = paths["litert"] / "model.tflite"
        target.write_bytes(built[best].path.read_bytes())
        (paths["litert"] / manifest.model_file).unlink()
        write_manifest(manifest.model_copy(update={
            "runtime": "litert", "model_file": target.name, "sha256": sha256_of(target),
            "steps": tuple(built[best].steps)}), paths["litert"])
    shipped = {name: read_manifest(path).model_file for name, path in paths.items()}
    print(f"\nartifacts: {paths['onnxruntime']} ({shipped['onnxruntime']}), {paths['litert']} ({best}); serve both:\n")
    print(f"    .venv/bin/python benchmarks/ab_bench.py --models digits --variant onnxruntime "
          f"ARTIFACT={paths['onnxruntime']} --variant litert ARTIFACT={paths['litert']}")


class FixedShapes:
    """A .tflite of `batch_<N>` signatures, run like an onnxruntime session on feeds of exactly N rows."""

    def __init__(self, path: Path, threads: int) -> None:
        from optimize.tflite_session import import_interpreter

        interpreter = import_interpreter()(model_path=str(path), num_threads=threads)
        self._runners = {int(key.removeprefix("batch_")): interpreter.get_signature_runner(key)
                         for key in interpreter.get_signature_list()}

    def run(self, _names, feed: dict) -> list:
        runner = self._runners[len(next(iter(feed.values())))]  # litert-torch names the inputs args_0, args_1
        answers = runner(**{key: array.astype("int32") for key, array in zip(sorted(runner.get_input_details()),
                                                                              feed.values())})
        return list(answers.values())


def minilm_rows(work: Path, threads: list[int], repeats: int) -> list[Row] | str:
    """all-MiniLM-L6-v2 on 32 held-out sentences padded to the longest, b1 = the first of them at that width:
    onnxruntime fp32 and dynamic int8 against LiteRT fp32 and dynamic-range int8 (litert-torch exports fixed
    shapes only; two inputs, so it is no optimizer candidate). Or why litert-torch could not convert it."""
    import ai_edge_quantizer
    import litert_torch
    import torch

    from optimize.demos.minilm import minilm_source
    from optimize.demos.sentences import generate_sentences
    from optimize.embedding import OUTPUT, Tokens
    from optimize.export import export_token_model
    from optimize.quantize import prepare, quantize_int8_dynamic

    source = minilm_source(validation_count=BATCH)
    full = Tokens(source).feed(generate_sentences(BATCH, seed=7))  # seed 7: sentences the optimizer never sees
    feeds = {1: {name: array[:1] for name, array in full.items()}, BATCH: full}
    print(f"\nMiniLM: {BATCH} sentences padded to {full['input_ids'].shape[1]} tokens")
    litert_torch.config.show_progress = False  # its documented switch for the progress lines
    converter = litert_torch.Converter()
    for size, feed in feeds.items():
        converter.signature(f"batch_{size}", source.module.eval(), tuple(torch.from_numpy(a) for a in feed.values()))
    try:
        converter.convert().export(str(work / "tflite_fp32.tflite"))
    except Exception as error:  # noqa: BLE001 - torch.export and the lowering raise many types; the line is the point
        return f"litert-torch {litert_torch.__version__} could not convert it: " \
               f"{(str(error).strip().splitlines() or [type(error).__name__])[0]}"
    quantizer = ai_edge_quantizer.Quantizer(str(work / "tflite_fp32.tflite"))
    quantizer.load_quantization_recipe(ai_edge_quantizer.recipe.dynamic_wi8_afp32())
    quantizer.quantize().export_model(str(work / "tflite_dynamic_int8.tflite"), overwrite=True)
    export_token_model(source.module, feeds[1], work / "fp32.onnx", OUTPUT)
    prepare(work / "fp32.onnx", work / "prepared.onnx")
    quantize_int8_dynamic(work / "prepared.onnx", work / "int8_dynamic.onnx")
    paths = {name: work / name for name in ("fp32.onnx", "int8_dynamic.onnx", "tflite_fp32.tflite",
                                            "tflite_dynamic_int8.tflite")}
    latency = {}
    for count in threads:
        sessions = {name.split(".")[0]: measure.open_session(path, count) if path.suffix == ".onnx"
                    else FixedShapes(path, count) for name, path in paths.items()}
        latency[count] = measure.interleaved_latency_ms(sessions, feeds.__getitem__, (1, BATCH), repeats)
    reference = measure.run(sessions["fp32"], full)
    rows = []
    for (name, session), path in zip(sessions.items(), paths.values()):
        together, alone = session.run(None, full)[0], session.run(None, feeds[1])[0]
        rows.append(Row(name, path.stat().st_size, {count: latency[count][name] for count in threads},
                        float(measure.cosine_to(reference, together).min()),
                        float(abs(together[:1] - alone).max())))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["mlp", "cnn", "keras"], choices=["mlp", "cnn", "keras"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts to time on")
    parser.add_argument("--repeats", type=int, default=200, help="interleaved timing rounds per batch size")
    parser.add_argument("--artifacts", type=Path, help="write the MLP's onnxruntime and LiteRT artifacts here")
    parser.add_argument("--minilm", action="store_true", help="try converting all-MiniLM-L6-v2 with litert-torch")
    parser.add_argument("--minilm-repeats", type=int, default=20, help="MiniLM's timing rounds (b32 takes ~1 s)")
    parser.add_argument("--quick", action="store_true", help="the Keras MLP trained 2 epochs, 20 repeats")
    args = parser.parse_args()
    repeats = 20 if args.quick else args.repeats
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in VERSIONS)
    print(f"{measure.cpu_name()} ({', '.join(cpu_flags())}), {os.cpu_count()} cores, {datetime.date.today()}, "
          f"median of {repeats} interleaved runs; {versions}")
    with tempfile.TemporaryDirectory(prefix="litert-bench-") as scratch:
        for title, make_source in sources(args.models, args.quick).items():
            source, work = make_source(), Path(scratch) / title.split()[0]
            work.mkdir()
            built, skipped = build(source, work)
            rows = measured_rows(source, built, skipped, args.threads, repeats)
            print_table(f"{title}, held-out digits", rows, args.threads)
            if args.artifacts is not None and title == "mlp":
                write_artifacts(source, rows, built, args.artifacts, args.threads[0])
        if args.minilm:
            (Path(scratch) / "minilm").mkdir()
            rows = minilm_rows(Path(scratch) / "minilm", args.threads, args.minilm_repeats)
            title = f"all-MiniLM-L6-v2, {BATCH} held-out sentences padded to the longest, median of " \
                    f"{args.minilm_repeats} runs"
            if isinstance(rows, str):
                print(f"\n{title}: {rows}")
            else:
                print_table(title, rows, args.threads, "worst cosine to ort fp32")


if __name__ == "__main__":
    main()
