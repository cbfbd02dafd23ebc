"""Accuracy, latency and size of ONNX model variants, measured on this machine."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from optimize.feeds import Feed, resize_rows, row_count, take_rows


def open_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session on `threads` intra-op threads (None: onnxruntime's default, one per core)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(session: ort.InferenceSession, inputs: np.ndarray | Feed) -> np.ndarray:
    """The first output for `inputs`: a feed of named arrays, or one array for a one-input model."""
    return session.run(None, _feed(session, inputs))[0]


def _feed(session: ort.InferenceSession, inputs: np.ndarray | Feed) -> Feed:
    return inputs if isinstance(inputs, dict) else {session.get_inputs()[0].name: inputs}


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(outputs, axis=1) == labels))


def interleaved_latency_ms(
    sessions: dict[str, ort.InferenceSession], feed: Callable[[int], Feed], batch_sizes: tuple[int, ...],
    repeats: int,
) -> dict[str, dict[int, float]]:
    """Median latency per session and batch size, timing the sessions in turn (A B A B ...)."""
    return medians(interleaved_samples(sessions, feed, batch_sizes, repeats))


def medians(samples: dict[str, dict[int, list[float]]]) -> dict[str, dict[int, float]]:
    """Each session's median latency per batch size it was timed at."""
    return {name: {b: round(statistics.median(times), 5) for b, times in by_batch.items() if times}
            for name, by_batch in samples.items()}


def interleaved_samples(
    sessions: dict[str, ort.InferenceSession], feed: Callable[[int], Feed], batch_sizes: tuple[int, ...],
    repeats: int, stop_early: Callable[[dict[str, dict[int, list[float]]]], set[str]] | None = None,
    first_block: int = 0,
) -> dict[str, dict[int, list[float]]]:
    """Each session's latencies (ms) per batch size, one sample per round; in each round the sessions run in
    turn (A B A B ...), so the i-th samples of two sessions were taken side by side.

    `feed(batch_size)` builds the model inputs for one batch. Interleaving
    spreads the noise of a shared machine over every variant instead of
    letting one variant absorb a slow spell, and each round starts with the
    next session, so none always runs right after the same one (a session
    whose threads linger would otherwise slow its successor every time).
    At the start of each batch size and after its first `first_block` rounds,
    the sessions `stop_early(samples)` names are timed no further.
    """
    from tqdm.auto import tqdm

    samples: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batch_sizes} for name in sessions}
    timing = dict(sessions)
    for batch_size in tqdm(batch_sizes, desc="timing candidates", unit="batch size", leave=False):
        batch = feed(batch_size)
        for session in timing.values():
            for _ in range(3):  # warm-up (TorchScript's profiling executor optimizes on its second call)
                session.run(None, batch)
        for round_ in range(repeats):
            if stop_early is not None and round_ in (0, first_block):  # on what earlier batch sizes showed, too
                for name in stop_early(samples):
                    timing.pop(name, None)
            names = list(timing)  # each round starts one further along: no model always follows the same one
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                start = time.perf_counter()
                timing[name].run(None, batch)
                samples[name][batch_size].append((time.perf_counter() - start) * 1e3)
    return samples


def resized_feed(inputs: Feed) -> Callable[[int], Feed]:
    """Batches of any size cut (or tiled) from the validation inputs."""
    return lambda batch_size: resize_rows(inputs, batch_size)


def batch_deviation(session: ort.InferenceSession, inputs: np.ndarray | Feed, batch_size: int) -> float:
    """Largest abs difference between each row run alone and the same row run inside batches.

    Batches of `batch_size` and one batch of everything are both tried: dynamic
    int8 derives one activation scale per batch, so a row's answer can move
    with its neighbours. fp32 models come out near zero.
    """
    feed = _feed(session, inputs)
    rows = row_count(feed)
    alone = np.concatenate([run(session, take_rows(feed, slice(i, i + 1))) for i in range(rows)])
    chunked = np.concatenate([run(session, take_rows(feed, slice(i, i + batch_size)))
                              for i in range(0, rows, batch_size)])
    together = run(session, feed)
    return float(max(np.max(np.abs(alone - chunked)), np.max(np.abs(alone - together))))


def cosine_to(reference: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity between outputs and reference outputs."""
    dot = np.sum(reference * outputs, axis=1)
    return dot / (np.linalg.norm(reference, axis=1) * np.linalg.norm(outputs, axis=1) + 1e-12)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
