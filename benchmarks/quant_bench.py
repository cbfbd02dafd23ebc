"""all-MiniLM-L6-v2 int8 variants against fp32 on held-out sentences: throughput, cosine, size.

    .venv/bin/python benchmarks/quant_bench.py [--artifact artifacts/minilm] [--repeats 15]

The shipped artifact (`make minilm`: the accuracy guard's plan) is compared
with a fresh fp32 export and plain dynamic int8, on sentences the guard never
saw (another seed). Sessions are timed in turn (A B C A B C ...), medians.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimize import measure  # noqa: E402
from optimize.demos.minilm import minilm_source  # noqa: E402
from optimize.embedding import OUTPUT, Tokens, embed  # noqa: E402
from optimize.export import export_token_model  # noqa: E402
from optimize.quantize import prepare, quantize_int8_dynamic  # noqa: E402
from optimize.report import cpu_flags  # noqa: E402
from optimize.demos.sentences import generate_sentences  # noqa: E402

HELD_OUT_SEED = 99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/minilm"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sentences", type=int, default=512)
    args = parser.parse_args()
    source = minilm_source(validation_count=32)
    tokens = Tokens(source)
    held_out = tuple(generate_sentences(args.sentences, seed=HELD_OUT_SEED))
    with tempfile.TemporaryDirectory() as work:
        paths = {"fp32": Path(work) / "fp32.onnx", "int8_dynamic": Path(work) / "int8.onnx",
                 "shipped": args.artifact / "model.onnx"}
        export_token_model(source.module, tokens.feed(held_out[:2]), paths["fp32"], OUTPUT)
        prepare(paths["fp32"], Path(work) / "prepared.onnx")
        quantize_int8_dynamic(Path(work) / "prepared.onnx", paths["int8_dynamic"])
        sessions = {name: measure.open_session(path) for name, path in paths.items()}
        reference = embed(sessions["fp32"], tokens, held_out)
        scores = {name: measure.cosine_to(reference, embed(s, tokens, held_out)) for name, s in sessions.items()}
        latency = measure.interleaved_latency_ms(
            sessions, lambda b: tokens.feed(held_out[:b]), (1, 32), args.repeats)
        sizes = {name: path.stat().st_size for name, path in paths.items()}
    print(f"\n{measure.cpu_name()} ({', '.join(cpu_flags())}), {os.cpu_count()} cores, {datetime.date.today()}, "
          f"{len(held_out)} held-out sentences, median of {args.repeats} interleaved runs\n")
    print("| model | size MB | size vs fp32 | b1 ms | b32 ms | b32 sentences/s | vs fp32 | cosine mean | cosine min |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = latency["fp32"][32]
    for name, size in sizes.items():
        print(f"| {name} | {size / 1e6:.1f} | {size / sizes['fp32']:.0%} | {latency[name][1]:.1f} | "
              f"{latency[name][32]:.1f} | {32e3 / latency[name][32]:.0f} | {base / latency[name][32]:.2f}x | "
              f"{scores[name].mean():.4f} | {scores[name].min():.4f} |")


if __name__ == "__main__":
    main()
