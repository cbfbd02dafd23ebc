"""The replicas' own HTTP servers against Ray Serve's request path, through the same HAProxy ingress.

    .venv/bin/python benchmarks/replica_http_bench.py [--models digits minilm] [--concurrency 1 8 32 128]
        [--repeats 3] [--seconds 6] [--replicas 2]

Starts two `optiserve serve` side by side, one with `OPTISERVE_REPLICA_HTTP=true` (the default: HAProxy
sends model requests to each replica's own server, serve/replica_http.py) and one with `false` (Ray's
uvicorn and request wrapper in each replica), and measures them in turn, cell by cell, alternating which
goes first. The closed-loop load client (benchmarks/load_client.py) sends cache-cold requests at each
concurrency, after a 2 s warm-up. Prints the median requests per second and p50/p99 of each, and the
ratio. docs/BENCHMARKS.md records the runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load_client import DigitsBodies, TextBodies, closed_loop  # noqa: E402
from optimize.measure import cpu_name  # noqa: E402
from optiserve.local_server import start_server, stop_server  # noqa: E402

SYSTEMS = {"own server": "true", "Ray's path": "false"}


def bodies_for(model: str, artifact: Path):
    return DigitsBodies() if model == "digits" else TextBodies(artifact / "tokenizer.json")


def run(model: str, levels: list[int], repeats: int, seconds: float, replicas: int) -> dict:
    """Both servers run side by side the whole time (each idle while the other is measured); cells alternate
    between them, A B then B A, so that a machine that drifts during the run weighs on both alike."""
    artifact = ROOT / "artifacts" / model
    bodies = bodies_for(model, artifact)
    servers = {}
    try:
        for system, setting in SYSTEMS.items():
            log = Path(tempfile.gettempdir()) / f"replica_http_bench_{model}_{setting}.log"
            servers[system] = start_server([artifact], log, "--replicas", str(replicas),
                                           env={"OPTISERVE_REPLICA_HTTP": setting})
        urls = {system: f"{server.url}/v2/models/{model}/infer" for system, server in servers.items()}
        for url in urls.values():
            closed_loop(url, bodies, 8, 2.0)  # warm-up
        results: dict[tuple[str, int], list[dict]] = {}
        for repeat in range(repeats):
            for level in levels:
                order = list(SYSTEMS) if (repeat + levels.index(level)) % 2 == 0 else list(reversed(SYSTEMS))
                for system in order:
                    cell = closed_loop(urls[system], bodies, level, seconds)
                    results.setdefault((system, level), []).append(cell)
                    print(f"{model} repeat {repeat} c={level} {system}: {cell['rps']:.0f} req/s, "
                          f"{cell['errors']} errors", flush=True)
        return results
    finally:
        for server in servers.values():
            stop_server(server)


def table(model: str, levels: list[int], results: dict) -> str:
    lines = [f"#### {model}", "", "| concurrency | system | req/s (median) | each repeat | p50 ms | p99 ms | errors | "
             "own / Ray's |", "|---|---|---|---|---|---|---|---|"]
    for level in levels:
        medians = {system: statistics.median(c["rps"] for c in results[(system, level)]) for system in SYSTEMS}
        for system in SYSTEMS:
            cells = results[(system, level)]
            ratio = f"{medians['own server'] / medians[system]:.2f}x" if system == "Ray's path" else ""
            each = " / ".join(f"{cell['rps']:,.0f}" for cell in cells)
            lines.append(
                f"| {level} | {system} | {medians[system]:,.0f} | {each} | "
                f"{statistics.median(c['p50_ms'] for c in cells):.2f} | "
                f"{statistics.median(c['p99_ms'] for c in cells):.2f} | {sum(c['errors'] for c in cells)} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["digits", "minilm"], choices=["digits", "minilm"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    print(f"{cpu_name()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    tables = [table(model, args.concurrency, run(model, args.concurrency, args.repeats, args.seconds, args.replicas))
              for model in args.models]
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
