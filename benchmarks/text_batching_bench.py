"""How the replica should cut a batch of sentences: one padded call, or length-sorted groups within a token budget.

    PYTHONPATH=. .venv/bin/python benchmarks/text_batching_bench.py [--artifact artifacts/minilm] [--batches 12]

Batches of 32 distinct generated sentences go through `serve.runtimes.text.TextEncoder.run_grouped`
with each budget in turn (interleaved), 1 onnxruntime thread; medians.
Budget 1 means one sentence per call; a huge budget means the whole batch padded to its longest.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.text_bench import distinct_sentences  # noqa: E402
from optimize.manifest import read_manifest  # noqa: E402
from optimize.measure import cpu_name  # noqa: E402
from serve.runtimes.text import TextEncoder  # noqa: E402

BUDGETS = (1, 128, 256, 512, 1024, 1_000_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/minilm"))
    parser.add_argument("--batches", type=int, default=12)
    args = parser.parse_args()
    manifest = read_manifest(args.artifact)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(args.artifact / manifest.model_file), options, providers=["CPUExecutionProvider"])
    texts = distinct_sentences(32 * args.batches, seed=3)
    encoders = {budget: TextEncoder(args.artifact, manifest.text_input, token_budget=budget, padding_limit=1.0)
                for budget in BUDGETS}  # budgets alone: padding of any share
    seconds: dict[int, list[float]] = {budget: [] for budget in BUDGETS}
    for start in range(0, len(texts), 32):
        batch = np.array(texts[start : start + 32], dtype=object)
        for budget, encoder in encoders.items():
            began = time.perf_counter()
            encoder.run_grouped(batch, lambda feed: session.run(None, feed)[0])
            seconds[budget].append(time.perf_counter() - began)
    print(f"\n{cpu_name()}, {os.cpu_count()} cores, {datetime.date.today()}, {args.batches} batches of 32, "
          "1 onnxruntime thread, medians\n")
    print("| token budget per call | sentences/s |\n|---|---|")
    for budget, times in seconds.items():
        label = {1: "1 (one sentence per call)", 1_000_000: "unbounded (whole batch padded to its longest)"}
        print(f"| {label.get(budget, budget)} | {32 / statistics.median(times):.0f} |")


if __name__ == "__main__":
    main()
