"""optiserve against its peers and the hardware ceiling: same models, same client, one run.

    .venv/bin/python benchmarks/bench.py            # `make bench`: 4 concurrencies, 3 repeats, writes docs/
    .venv/bin/python benchmarks/bench.py --quick    # `make bench-quick`: 2 concurrencies, 1 repeat, writes build/

For each repeat, for each model (digits; all-MiniLM-L6-v2 when artifacts/minilm
exists), every system is started fresh on a free loopback port, warmed up, run
at each concurrency by the one load client (benchmarks/load_client.py), and
stopped; the system order rotates every repeat (interleaved). Cells are
medians over repeats (errors: the total). Also measured: the ceiling
(onnxruntime in-process, the best of several batchings of `concurrency` rows
in flight) and the load client's own ceiling against a no-op server. Peers
need `make bench-venvs`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import write_report  # noqa: E402
from load_client import TextBodies, bodies_for, closed_loop  # noqa: E402
from peer_systems import ROOT, SYSTEMS, free_port, start  # noqa: E402

CEILING = "ceiling"
CLIENT = "client"


def ensure_artifacts(skip_minilm: bool, snapshot: Path) -> dict[str, Path]:
    """The artifacts to benchmark, building them if missing, copied to `snapshot` so that a
    rebuild in artifacts/ during the run cannot change what is measured."""
    digits = ROOT / "artifacts" / "digits"
    if not (digits / "manifest.json").exists():
        from optimize.demos.digits import trained_digits_classifier
        from optimize.pipeline import optimize_model
        from optimize.settings import OptimizeSettings

        optimize_model(trained_digits_classifier(), digits, OptimizeSettings())
    artifacts = {"digits": digits}
    minilm = ROOT / "artifacts" / "minilm"
    if not skip_minilm and not (minilm / "manifest.json").exists() and (ROOT / "optimize" / "demos" / "minilm.py").exists():
        subprocess.run(["make", "minilm"], cwd=ROOT, check=False, timeout=1800)
    if not skip_minilm and (minilm / "manifest.json").exists():
        artifacts["minilm"] = minilm
    else:
        print("MiniLM: artifacts/minilm not there (`make minilm`); benchmarking digits only", file=sys.stderr)
    return {model: Path(shutil.copytree(path, snapshot / model)) for model, path in artifacts.items()}


def ceiling(model: str, artifact: Path, concurrency: int, seconds: float) -> dict:
    """The best in-process way to keep `concurrency` rows in flight on every core (compute only).

    "batch": one session, intra-op threads = cores, full batches of `concurrency` rows (the ideal batch);
    "batch, 1 thread": the same on one thread (small batches pay for waking a second thread);
    "split": one single-thread session per core, each running full batches of its share of the rows;
    "rows": one single-thread session per core, rows one at a time (no padding: text rows of any length);
    "sorted" (text): as "split", each share sorted by length and cut into groups of similar length, as the
    replica cuts its batches (serve/runtimes/text.py), so that little of a call is padding.
    MiniLM inputs are tokenized (padded to the batch's, or group's, longest) before the clock starts.
    """
    cores = os.cpu_count() or 1
    strategies = {"batch": (1, cores, concurrency, False), "batch, 1 thread": (1, 1, concurrency, False)}
    if concurrency >= cores:
        strategies["split"] = (cores, 1, concurrency // cores, False)
        strategies["rows"] = (cores, 1, 1, False)
        if model == "minilm":
            strategies["sorted"] = (cores, 1, concurrency // cores, True)
    results = {name: _ceiling_run(artifact, *plan, seconds / len(strategies)) for name, plan in strategies.items()}
    best = max(results, key=lambda name: results[name]["rps"])
    return {**results[best], "strategy": best, "strategies": {name: r["rps"] for name, r in results.items()}}


def _ceiling_run(artifact: Path, workers: int, threads: int, batch: int, by_length: bool, seconds: float) -> dict:
    """`workers` sessions side by side, each running batches of `batch` rows (one or more calls each) and timing
    each batch."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))
    os.environ.setdefault("PEER_ARTIFACT", str(artifact))
    from common import PeerModel

    models = [PeerModel(artifact, threads=threads) for _ in range(workers)]
    first = models[0]
    if first.is_text:
        sentences = TextBodies(artifact / "tokenizer.json").sentences(batch * 64)
        batches = [sentences[i:i + batch] for i in range(0, len(sentences), batch)]
        encoder = _replica_encoder(artifact) if by_length else None
        calls = [_sorted_calls(encoder, b) if by_length else [first._tokenize(b)] for b in batches]
    else:
        rng = np.random.default_rng(1)
        calls = [[{first.input["name"]: rng.random((batch, 64), dtype=np.float32) * 16}] for _ in range(16)]
    times: list[list[float]] = [[] for _ in models]

    def loop(index: int) -> None:
        session, mine = models[index].session, times[index]
        for feed in calls[index % len(calls)]:  # warm-up
            session.run(None, feed)
        stop_at = time.monotonic() + seconds
        while not mine or time.monotonic() < stop_at:  # at least one timed batch, however slow
            started = time.perf_counter()
            for feed in calls[(len(mine) * workers + index) % len(calls)]:
                session.run([first.output_name], feed)
            mine.append(time.perf_counter() - started)

    with ThreadPoolExecutor(workers) as pool:  # onnxruntime releases the GIL while it runs
        list(pool.map(loop, range(workers)))
    rps = sum(batch * len(t) / sum(t) for t in times if t)
    flat = sorted(x for t in times for x in t)
    p99 = flat[min(len(flat) - 1, int(len(flat) * 0.99))]
    return {"rps": rps, "p50_ms": flat[len(flat) // 2] * 1e3, "p99_ms": p99 * 1e3, "errors": 0, "client_cpu": 0.0}


def _replica_encoder(artifact: Path):
    """The replica's tokenizing and grouping (serve/runtimes/text.py), with its CPU defaults."""
    from optimize.manifest import read_manifest
    from serve.runtimes.text import TextEncoder

    return TextEncoder(artifact, read_manifest(artifact).text_input)


def _sorted_calls(encoder, sentences: list[str]) -> list[dict]:
    """The model calls the replica makes for this batch of sentences."""
    return [feed for _, feed in encoder.grouped_feeds(np.array(sentences, dtype=object))]


def client_ceiling(levels: list[int], seconds: float, artifacts: dict[str, Path]) -> dict[str, dict[int, dict]]:
    """The load client against a no-op HTTP server, with each model's bodies."""
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "noop_server.py"), str(port)])
    try:
        time.sleep(1.0)
        return {model: {c: closed_loop(f"http://127.0.0.1:{port}/noop", bodies_for(model, artifact), c, seconds)
                        for c in levels} for model, artifact in artifacts.items()}
    finally:
        server.terminate()
        server.wait(10)


def measure_system(system, model: str, artifact: Path, bodies, levels, seconds, logs: Path) -> dict[int, dict]:
    log = logs / f"{model}-{system.key}-{int(time.time())}.log"
    running = start(system, artifact, model, log, bodies.next())
    try:
        closed_loop(running.url, bodies, max(levels), min(2.0, seconds))  # warm-up
        return {c: closed_loop(running.url, bodies, c, seconds) for c in levels}
    finally:
        running.stop()


def median_cells(runs: list[dict[int, dict]]) -> dict[int, dict]:
    cells = {}
    for c in runs[0]:
        samples = [run[c] for run in runs if c in run]
        cells[c] = {key: statistics.median(s[key] for s in samples) for key in ("rps", "p50_ms", "p99_ms", "client_cpu")}
        cells[c]["errors"] = sum(s["errors"] for s in samples)
        cells[c]["repeats"] = len(samples)
        cells[c]["rps_each"] = [round(s["rps"]) for s in samples]  # per repeat, in run order: spread and drift
        cells[c]["repeat_each"] = [s.get("repeat") for s in samples]  # which repeat each came from (failed: absent)
        if "strategy" in samples[0]:
            cells[c]["strategy"] = statistics.mode(s["strategy"] for s in samples)
            cells[c]["strategies"] = {name: statistics.median(s["strategies"][name] for s in samples)
                                      for name in samples[0]["strategies"]}
    return cells


def run(args: argparse.Namespace) -> dict:
    logs = Path(tempfile.mkdtemp(prefix="optiserve-bench-"))
    artifacts = ensure_artifacts(args.skip_minilm, logs / "artifacts")
    systems = [s for s in SYSTEMS if not args.systems or s.key in args.systems]
    runs: dict[str, dict[str, list]] = {model: {} for model in artifacts}
    failures: list[str] = []
    orders: list[str] = []  # each repeat's system order, to read rps_each against
    bodies = {model: bodies_for(model, artifact) for model, artifact in artifacts.items()}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        for model, artifact in artifacts.items():
            entries = [*systems, CEILING]
            order = entries[repeat % len(entries):] + entries[:repeat % len(entries)]
            orders.append(f"{model}: " + " ".join(getattr(system, "key", system) for system in order))
            for system in order:
                if system == CEILING:
                    key, cells = CEILING, {c: ceiling(model, artifact, c, args.seconds) for c in args.concurrency}
                else:
                    key = system.key
                    try:
                        cells = measure_system(system, model, artifact, bodies[model], args.concurrency,
                                               args.seconds, logs)
                    except Exception as error:  # a peer that fails is reported, the run goes on
                        failures.append(f"{model} / {system.label}, repeat {repeat + 1}: "
                                        f"{str(error).splitlines()[0]}")
                        traceback.print_exc()
                        continue
                for cell in cells.values():
                    cell["repeat"] = repeat
                runs[model].setdefault(key, []).append(cells)
                _progress(repeat, args.repeats, model, key, cells)
    client = client_ceiling(args.concurrency, args.seconds, artifacts)
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": _cpu_name(), "cores": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
        "seconds": args.seconds, "repeats": args.repeats, "concurrency": args.concurrency,
        "labels": {s.key: s.label for s in systems},
        "models": {model: {key: median_cells(r) for key, r in by_system.items()} for model, by_system in runs.items()},
        "client": client, "failures": failures, "orders": orders, "logs": str(logs),
    }


def _progress(repeat: int, repeats: int, model: str, key: str, cells: dict[int, dict]) -> None:
    rates = " ".join(f"c={c}: {cell['rps']:,.0f}" for c, cell in cells.items())
    print(f"repeat {repeat + 1}/{repeats} {model} {key}: {rates} req/s", file=sys.stderr, flush=True)


def _cpu_name() -> str:
    from optimize.measure import cpu_name

    return cpu_name()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="c=1,32, 1 repeat, 3 s cells; writes build/bench-quick/")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--concurrency", type=int, nargs="+")
    parser.add_argument("--systems", nargs="+", help="subset of: " + " ".join(s.key for s in SYSTEMS))
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--out", type=Path, help="folder for tables and plots (default docs/, or build/bench-quick/)")
    args = parser.parse_args()
    quick = {"seconds": 3.0, "repeats": 1, "concurrency": [1, 32]}
    full = {"seconds": 5.0, "repeats": 3, "concurrency": [1, 8, 32, 128]}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    out = args.out or (ROOT / "build" / "bench-quick" if args.quick else ROOT / "docs")
    results = run(args)
    out.mkdir(parents=True, exist_ok=True)
    raw = ROOT / "build" / ("bench-quick.json" if args.quick else "bench.json")
    raw.parent.mkdir(exist_ok=True)
    raw.write_text(json.dumps(results, indent=1))
    print(write_report(results, out, update_doc=not args.quick and args.out is None))
    print(f"\nraw results: {raw}; server logs: {results['logs']}", file=sys.stderr)


if __name__ == "__main__":
    main()
