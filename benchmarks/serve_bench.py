"""Digits artifact through the server (both Ray Serve ingress paths) against in-process onnxruntime.

    .venv/bin/python benchmarks/serve_bench.py [--seconds 6] [--repeats 2] [--concurrency 1 16 64]

Closed-loop clients (benchmarks/load_client.py) on the same machine send cache-cold requests (each
body unique) for a fixed time. Systems are interleaved (A B A B) and each cell
is the median over repeats. The ceiling is onnxruntime in-process running
ideal full batches of `concurrency` rows. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.load_client import run_closed_loop  # noqa: E402
from optiserve.local_server import start_server, stop_server  # noqa: E402

POOL = 60_000
_next_body = iter(range(10**12))  # shared by every load run, so no body is sent twice to one server


def request_bodies(count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    rows = rng.random((count, 64), dtype=np.float32)
    return [
        json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row.tolist()}]}).encode()
        for row in rows
    ]


class _UniqueBodies:
    """Bodies in turn from one counter shared by every load run, so no body is sent twice to one server."""

    def __init__(self, bodies: list[bytes]) -> None:
        self._bodies = bodies

    def next(self) -> bytes:
        return self._bodies[next(_next_body) % len(self._bodies)]


async def closed_loop(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    """The shared load client (benchmarks/load_client.py) over `bodies`, on the running event loop."""
    cell = await run_closed_loop(url, _UniqueBodies(bodies), concurrency, seconds, timeout_s=30)
    cell.pop("error_kinds")  # cells hold numbers only (median_cells)
    return cell


def ceiling(model_path: Path, concurrency: int, seconds: float) -> dict:
    """onnxruntime in-process, full batches of `concurrency` rows, back to back."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(1).random((concurrency, 64), dtype=np.float32)
    times = []
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        session.run(None, {"input": batch})
        times.append(time.perf_counter() - started)
    times.sort()
    return {"rps": concurrency * len(times) / sum(times), "p50_ms": times[len(times) // 2] * 1e3,
            "p99_ms": times[int(len(times) * 0.99)] * 1e3, "errors": 0}


def measure_server(artifact: Path, flags: list[str], bodies, levels, seconds, model: str = "digits") -> dict[int, dict]:
    """Start the server with `flags`, warm it up, then one closed-loop run per concurrency level."""
    with tempfile.TemporaryDirectory() as logs:
        server = start_server([artifact], Path(logs) / "server.log", *flags)
        try:
            url = f"{server.url}/v2/models/{model}/infer"
            asyncio.run(closed_loop(url, bodies, 16, 1.5))  # warm-up
            return {c: asyncio.run(closed_loop(url, bodies, c, seconds)) for c in levels}
        finally:
            stop_server(server)


def median_cells(runs: list[dict[int, dict]]) -> dict[int, dict]:
    return {c: {k: statistics.median(run[c][k] for run in runs) for k in runs[0][c]} for c in runs[0]}


def table(results: dict[str, dict[int, dict]], levels: list[int]) -> str:
    ceiling_rps = {c: results["onnxruntime in-process (ceiling)"][c]["rps"] for c in levels}
    lines = ["| system | concurrency | req/s | p50 ms | p99 ms | errors | vs ceiling |", "|---|---|---|---|---|---|---|"]
    for name, cells in results.items():
        for c in levels:
            cell = cells[c]
            lines.append(f"| {name} | {c} | {cell['rps']:,.0f} | {cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} | "
                         f"{cell['errors']:.0f} | {cell['rps'] / ceiling_rps[c]:.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/digits"))
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--systems", nargs="+", default=["haproxy", "proxy"],
                        help="ingress variants; 'NAME:flag=value,...' adds server flags, e.g. haproxy:--max-wait-ms=0")
    args = parser.parse_args()
    if not (args.artifact / "manifest.json").exists():
        sys.exit(f"{args.artifact}: no artifact; run `make demo` or `optiserve optimize --out {args.artifact}` first")

    bodies = request_bodies(POOL)
    runs: dict[str, list] = {}
    for repeat in range(args.repeats):  # interleaved: every system once per repeat
        for system in args.systems:
            ingress, _, flags = system.partition(":")
            extra = [part for flag in flags.split(",") if flag for part in flag.split("=", 1)]
            print(f"repeat {repeat + 1}/{args.repeats}: {system}", file=sys.stderr, flush=True)
            runs.setdefault(f"optiserve, {system} ingress", []).append(
                measure_server(args.artifact, ["--ingress", ingress, *extra], bodies, args.concurrency, args.seconds))
        runs.setdefault("onnxruntime in-process (ceiling)", []).append(
            {c: ceiling(args.artifact / "model.onnx", c, args.seconds / 2) for c in args.concurrency})
    results = {name: median_cells(r) for name, r in runs.items()}
    results = {"onnxruntime in-process (ceiling)": results.pop("onnxruntime in-process (ceiling)"), **results}
    from optimize.measure import cpu_name

    print(f"\n{cpu_name()}, {os.cpu_count()} cores, {datetime.date.today()}, median of {args.repeats} "
          f"interleaved repeats, {args.seconds:g} s per cell, cache-cold (unique) requests\n")
    print(table(results, args.concurrency))


if __name__ == "__main__":
    main()
