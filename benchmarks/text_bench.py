"""all-MiniLM-L6-v2 through the server against onnxruntime in-process, and its result cache under Zipf.

    .venv/bin/python benchmarks/text_bench.py [--artifact artifacts/minilm] [--seconds 10] [--repeats 3]

1. Saturation: closed-loop clients send unique sentences (one per request, or
   `--sentences-per-request`; cache-cold) at each concurrency to the server configured as the README
   recommends (one replica per core, one onnxruntime thread each). The
   ceiling is the same model in-process, tokenizing and running ideal full
   batches of `max_batch_size` sentences back to back, cut into length-sorted
   groups exactly as the replica does (serve/runtimes/text.py), in the better of two
   layouts: one session per replica side by side, or one session with all the
   threads.
2. Zipf(s=1.1) over 10,000 distinct sentences at concurrency 32: the server
   with its result cache on against the cache off; each run starts cold.
Systems are interleaved (A B A B ...) and each cell is the median of repeats.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serve_bench import measure_server, median_cells  # noqa: E402
from optimize.measure import cpu_name  # noqa: E402
from optimize.demos.sentences import generate_sentences  # noqa: E402

DISTINCT = 10_000
ZIPF_S = 1.1


def distinct_sentences(count: int, seed: int) -> list[str]:
    unique = list(dict.fromkeys(generate_sentences(count * 2, seed)))
    if len(unique) < count:
        raise RuntimeError(f"expected {count} distinct sentences, the generator gave {len(unique)}")
    return unique[:count]


def text_body(*texts: str) -> bytes:
    return json.dumps({"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES",
                                   "data": list(texts)}]}).encode()


def zipf_bodies(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    pool = [text_body(text) for text in distinct_sentences(DISTINCT, seed)]
    weights = 1.0 / np.arange(1, DISTINCT + 1) ** ZIPF_S
    return [pool[k] for k in rng.choice(DISTINCT, size=count, p=weights / weights.sum())]


def _session(artifact: Path, model_file: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(artifact / model_file), options, providers=["CPUExecutionProvider"])


def ceiling(artifact: Path, texts: list[str], batch_size: int, sessions: int, threads: int, seconds: float) -> dict:
    """Tokenize and run full batches in-process, `sessions` sessions side by side (each in its own Python
    thread, `threads` onnxruntime threads each): the best this model can do on this machine."""
    from concurrent.futures import ThreadPoolExecutor

    from optimize.manifest import read_manifest
    from serve.runtimes.text import TextEncoder

    manifest = read_manifest(artifact)
    encoder = TextEncoder(artifact, manifest.text_input)

    opened = [_session(artifact, manifest.model_file, threads) for _ in range(sessions)]

    def run(index: int) -> int:
        session = opened[index]
        rows, offset = 0, index * 7919 % (len(texts) - batch_size)
        stop_at = time.monotonic() + seconds
        while time.monotonic() < stop_at:
            batch = np.array(texts[offset : offset + batch_size], dtype=object)
            offset = (offset + batch_size) % (len(texts) - batch_size)
            encoder.run_grouped(batch, lambda feed: session.run(None, feed)[0])  # as the replica does it
            rows += batch_size
        return rows

    began = time.monotonic()
    with ThreadPoolExecutor(sessions) as pool:
        rows = sum(pool.map(run, range(sessions)))
    return {"rps": rows / (time.monotonic() - began), "p50_ms": float("nan"), "p99_ms": float("nan"), "errors": 0}


def main() -> None:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/minilm"))
    parser.add_argument("--seconds", type=float, default=10.0, help="per saturation cell")
    parser.add_argument("--zipf-seconds", type=float, default=20.0, help="per Zipf cell (the cache warms as it runs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--replicas", type=int, default=cores, help="server replicas (README: one per core)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads per replica")
    parser.add_argument("--batch", type=int, default=32, help="max batch size, server and ceiling")
    parser.add_argument("--sentences-per-request", type=int, default=1,
                        help="sentences in each saturation request (embedding clients often send lists)")
    parser.add_argument("--skip-zipf", action="store_true")
    args = parser.parse_args()
    if not (args.artifact / "manifest.json").exists():
        sys.exit(f"{args.artifact}: no artifact; run `make minilm` first")

    texts = distinct_sentences(60_000, seed=3)
    k = args.sentences_per_request
    unique_bodies = [text_body(*texts[i : i + k]) for i in range(0, len(texts) - k + 1, k)]
    flags = ["--replicas", str(args.replicas), "--intra-op-threads", str(args.threads),
             "--max-batch-size", str(args.batch)]
    zipf = zipf_bodies(400_000, seed=0)
    threads_total = args.replicas * args.threads
    ceilings = {f"{args.replicas} sessions x {args.threads} threads": (args.replicas, args.threads),
                f"1 session x {threads_total} threads": (1, threads_total)}
    runs: dict[str, list] = {}
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats}", file=sys.stderr, flush=True)
        for name, (sessions, threads) in ceilings.items():
            cell = ceiling(args.artifact, texts, args.batch, sessions, threads, args.seconds / 2)
            runs.setdefault(name, []).append({c: cell for c in args.concurrency})
        runs.setdefault("server", []).append(
            measure_server(args.artifact, flags, unique_bodies, args.concurrency, args.seconds, "minilm"))
        if not args.skip_zipf:
            for name, budget in (("cache on", 256 << 20), ("cache off", 0)):
                runs.setdefault(name, []).append(measure_server(
                    args.artifact, [*flags, "--cache-max-bytes", str(budget)], zipf, [32], args.zipf_seconds,
                    "minilm"))
    results = {name: median_cells(r) for name, r in runs.items()}
    best_name = max(ceilings, key=lambda name: results[name][args.concurrency[0]]["rps"])
    print_tables(args, results, ceilings, best_name)


def print_tables(args, results: dict, ceilings: dict, best_name: str) -> None:
    first = args.concurrency[0]
    print(f"\n{cpu_name()}, {os.cpu_count()} cores, {datetime.date.today()}, median of {args.repeats} interleaved "
          f"repeats; server: {args.replicas} replicas x {args.threads} onnxruntime threads, batches of {args.batch}\n")
    print("| in-process ceiling (ideal full batches) | sentences/s |\n|---|---|")
    for name in ceilings:
        print(f"| {name}{' (best: the ceiling)' if name == best_name else ''} | {results[name][first]['rps']:,.0f} |")
    print(f"\n{args.sentences_per_request} sentence(s) per request\n")
    print("| concurrency | server sentences/s | p50 ms | p99 ms | errors | server / ceiling |")
    print("|---|---|---|---|---|---|")
    for c in args.concurrency:
        cell, best = results["server"][c], results[best_name][c]["rps"]
        sentences = cell["rps"] * args.sentences_per_request
        print(f"| {c} | {sentences:,.0f} | {cell['p50_ms']:.1f} | {cell['p99_ms']:.1f} | {cell['errors']:.0f} | "
              f"{sentences / best:.1%} |")
    if not args.skip_zipf:
        print(f"\n| Zipf(s={ZIPF_S}) over {DISTINCT:,} sentences, concurrency 32, {args.zipf_seconds:g} s | req/s | "
              "p50 ms | p99 ms | errors |\n|---|---|---|---|---|")
        for name in ("cache on", "cache off"):
            cell = results[name][32]
            print(f"| {name} | {cell['rps']:,.0f} | {cell['p50_ms']:.1f} | {cell['p99_ms']:.1f} | {cell['errors']:.0f} |")
        ratio = results["cache on"][32]["rps"] / results["cache off"][32]["rps"]
        print(f"\ncache on / off: {ratio:.2f}x")

if __name__ == "__main__":
    main()
