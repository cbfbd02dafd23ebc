"""Result cache: latency of a hit inside the server, and a Zipf workload with the cache on and off.

    .venv/bin/python benchmarks/cache_bench.py [--seconds 8] [--repeats 2]

1. Cache-hit latency inside the server (request received to response ready):
   one body sent repeatedly at concurrency 1, read from the server's own
   latency histogram (label cache="hit"), next to what the client saw.
2. Zipf(s=1.1) over 10,000 distinct inputs at concurrency 32: throughput with
   the cache on against the cache off, servers interleaved (on off on off),
   medians of repeats. Prints markdown.
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
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serve_bench import closed_loop  # noqa: E402
from optimize.measure import cpu_name  # noqa: E402
from optiserve.local_server import RunningServer, start_server, stop_server  # noqa: E402

DISTINCT = 10_000
ZIPF_S = 1.1


def zipf_bodies(count: int, seed: int) -> list[bytes]:
    """`count` requests drawn from DISTINCT inputs with P(rank k) proportional to 1/k^s."""
    rng = np.random.default_rng(seed)
    pool = rng.random((DISTINCT, 64), dtype=np.float32)
    weights = 1.0 / np.arange(1, DISTINCT + 1) ** ZIPF_S
    ranks = rng.choice(DISTINCT, size=count, p=weights / weights.sum())
    encoded = {}
    return [encoded.setdefault(int(k), _body(pool[k])) for k in ranks]


def _body(row: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row.tolist()}]}).encode()


def histogram_p50(server: RunningServer, **labels: str) -> tuple[float, float]:
    """(upper bound of the bucket holding the median, observations) from the server's histogram."""
    buckets = {}
    for bound in ("0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01"):
        buckets[float(bound)] = server.metric_total(
            "ray_optiserve_request_latency_seconds_bucket", le=bound, **labels)
    count = server.metric_total("ray_optiserve_request_latency_seconds_count", **labels)
    median_bound = next((bound for bound, seen in sorted(buckets.items()) if seen >= count / 2), float("inf"))
    return median_bound, count


def cache_hit_latency(artifact: Path, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as logs:
        server = start_server([artifact], Path(logs) / "server.log")
        try:
            body = [_body(np.full(64, 0.5, dtype=np.float32))]
            client = asyncio.run(closed_loop(f"{server.url}/v2/models/digits/infer", body * 10**6, 1, seconds))
            server.settled_total("ray_optiserve_request_latency_seconds_count", model="digits", cache="hit")
            p50_bound, hits = histogram_p50(server, model="digits", cache="hit")
            return {"server_p50_at_most_ms": p50_bound * 1e3, "hits": hits, "client_p50_ms": client["p50_ms"],
                    "client_rps": client["rps"]}
        finally:
            stop_server(server)


def zipf_run(artifact: Path, cache_bytes: int, bodies: list[bytes], seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as logs:
        server = start_server([artifact], Path(logs) / "server.log", "--cache-max-bytes", str(cache_bytes))
        try:
            return asyncio.run(closed_loop(f"{server.url}/v2/models/digits/infer", bodies, 32, seconds))
        finally:
            stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/digits"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    hit = cache_hit_latency(args.artifact, args.seconds)
    bodies = zipf_bodies(200_000, seed=0)
    runs: dict[str, list[dict]] = {"cache on": [], "cache off": []}
    for repeat in range(args.repeats):
        for name, budget in (("cache on", 64 << 20), ("cache off", 0)):
            print(f"repeat {repeat + 1}: {name}", file=sys.stderr, flush=True)
            runs[name].append(zipf_run(args.artifact, budget, bodies, args.seconds))
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}

    print(f"\n{cpu_name()}, {os.cpu_count()} cores, {datetime.date.today()}\n")
    print("| cache hit, concurrency 1 | value |\n|---|---|")
    print(f"| server-side p50 (request received to response ready) | <= {hit['server_p50_at_most_ms']:g} ms "
          f"(histogram bucket, {hit['hits']:.0f} hits) |")
    print(f"| client-side p50 (HTTP round trip through HAProxy) | {hit['client_p50_ms']:.2f} ms |")
    print(f"| client-side throughput | {hit['client_rps']:,.0f} req/s |\n")
    print(f"| Zipf(s={ZIPF_S}) over {DISTINCT:,} inputs, concurrency 32 | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for name, cell in medians.items():
        print(f"| {name} | {cell['rps']:,.0f} | {cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} | {cell['errors']:.0f} |")
    print(f"\nratio on/off: {medians['cache on']['rps'] / medians['cache off']['rps']:.2f}x "
          f"(median of {args.repeats} interleaved repeats, {args.seconds:g} s each)")


if __name__ == "__main__":
    main()
