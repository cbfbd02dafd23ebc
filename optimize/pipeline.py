"""The optimize stage, one pipeline for every kind of model: export, build candidates, measure, judge, choose, ship.

fp32 is the baseline. Each candidate is timed side by side with it at every
batch size (interleaved), scored on held-out data and checked for batch
invariance. A candidate ships only if it holds the kind's accuracy criterion
and, for a CPU target, is faster than fp32 beyond the measured spread and
slower at no batch size (optimize/speed.py);
among those the fastest wins, preferring batch-invariant ones
(optimize/selection.py). What differs between classifiers and text-embedding
models (scoring, candidates, files beside the model) is the kind's
(optimize/kind.py); which kind a source is, optimize/dispatch.py decides.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from optimize import measure, speed
from optimize.artifact import Shipped, runtime_of, write_artifact
from optimize.dispatch import kind_for
from optimize.kind import Built, Kind
from optimize.manifest import Manifest, Measurement, Step
from optimize.selection import choose_candidate, describe_candidate, judge
from optimize.settings import OptimizeSettings
from optimize.speed import Speed


def optimize_model(source, out_dir: Path, settings: OptimizeSettings, log: Callable[[str], None] = print) -> Manifest:
    """Build fp32 and the candidates, keep the fastest within tolerance, write the artifact directory.

    `source` is an optimize.source.ModelSource or EmbeddingSource.
    """
    kind = kind_for(source, settings, log)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="optiserve-") as work_dir:
        work = Path(work_dir)
        fp32 = kind.export_fp32(work)
        built = {"fp32": fp32, **kind.build_candidates(fp32, work)}
        sessions = {name: kind.open(b.path) for name, b in built.items()}
        measurements, speeds = _measure(kind, sessions, built, settings, log)
        candidates = [c.model_copy(update={"steps": tuple(built[c.name].steps),
                                           "runtime": runtime_of(built[c.name].path)})
                      for c in judge(measurements, kind.accuracy_problem, settings, speeds)]
        for candidate in candidates:
            log(describe_candidate(candidate))
        chosen = choose_candidate(candidates, settings, log)
        log(f"batch deviation of the shipped model: {measurements[chosen].batch_deviation:.2e} "
            "(each input alone vs inside batches)")
        model_file, steps = _ship(kind, built[chosen], settings, out_dir)
        extras = kind.finish(fp32, out_dir)
    shipped = Shipped(chosen, model_file, (*kind.prior_steps, *steps, *extras.steps), sessions[chosen])
    return write_artifact(out_dir, source, kind.metric, shipped, candidates, measurements, extras, settings, log)


def _measure(kind: Kind, sessions: dict, built: dict[str, Built], settings: OptimizeSettings,
             log: Callable[[str], None]) -> tuple[dict[str, Measurement], dict[str, Speed]]:
    sizes, repeats = settings.batch_sizes, settings.latency_repeats
    log(f"timing {', '.join(sessions)} at batch sizes {sizes}, interleaved, {repeats} repeats each")
    stopped: dict[str, str] = {}

    def stop_clearly_slower(samples: speed.Samples) -> set[str]:
        if settings.target != "cpu":  # a GPU target's CPU latency ranks nothing: time it all for the report
            return set()
        found = speed.clearly_slower(samples, "fp32", settings.clearly_slower)
        for name, seen in found.items():
            if name not in stopped:
                log(f"{name}: {seen}; clearly slower, timed no further")
        stopped.update(found)
        return set(found)

    samples = measure.interleaved_samples(sessions, kind.feed, sizes, repeats, stop_clearly_slower,
                                          first_block=max(10, repeats // settings.timing_blocks))
    speeds = speed.compare(samples, "fp32", settings.timing_blocks, settings.min_speedup, stopped)
    latencies = measure.medians(samples)
    measurements = {}
    for name, session in sessions.items():
        accuracy, worst = kind.score(session)
        relative = speeds.get(name)
        measurements[name] = Measurement(
            accuracy=accuracy, worst=worst, size_bytes=built[name].path.stat().st_size,
            latency_ms=latencies[name],
            relative_latency=round(relative.relative, 4) if relative else 1.0,
            relative_latency_range=(round(relative.low, 4), round(relative.high, 4)) if relative else (1.0, 1.0),
            batch_deviation=kind.batch_deviation(session),
        )
    return measurements, speeds


def _ship(kind: Kind, built: Built, settings: OptimizeSettings, out_dir: Path) -> tuple[str, list[Step]]:
    """Put the chosen candidate into the artifact: its file as it is, or for the GPU target's torch runtime a
    torch.export program of the source's PyTorch module."""
    if settings.target == "gpu" and settings.gpu_runtime == "torch":
        from optimize.gpu import PROGRAM_FILE, export_program

        program = kind.program()
        step = export_program(program.module, program.example_inputs, program.dynamic_shapes, out_dir / PROGRAM_FILE)
        return PROGRAM_FILE, [*built.steps, step]
    model_file = f"model{built.path.suffix}"  # .onnx, .pt (TorchScript) or .tflite (LiteRT)
    shutil.copyfile(built.path, out_dir / model_file)
    return model_file, built.steps
