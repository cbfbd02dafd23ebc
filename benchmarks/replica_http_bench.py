"""The replicas' own HTTP servers against Ray Serve's request path, through the same HAProxy ingress.

    .venv/bin/python benchmarks/replica_http_bench.py [--models digits minilm] [--concurrency 1 8 32 128]
        [--repeats 3] [--seconds 6] [--replicas 2]

Starts `optiserve serve` twice per repeat, once with `OPTISERVE_REPLICA_HTTP=true` (the default: HAProxy
sends model requests to each replica's own server, serve/replica_http.py) and once with `false` (Ray's
uvicorn and request wrapper in each replica), alternating which goes first. The closed-loop load client
(benchmarks/load_client.py) sends cache-cold requests at each concurrency after a 2 s warm-up. Prints
the median requests per second and p50/p99 of each, and the ratio. docs/BENCHMARKS.md records the runs.
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
    artifact = ROOT / "artifacts" / model
    bodies = bodies_for(model, artifact)
    results: dict[tuple[str, int], list[dict]] = {}
    for repeat in range(repeats):
        order = list(SYSTEMS) if repeat % 2 == 0 else list(reversed(SYSTEMS))
        for system in order:
            log = Path(tempfile.gettempdir()) / f"replica_http_bench_{model}.log"
            server = start_server([artifact], log, "--replicas", str(replicas),
                                  env={"OPTISERVE_REPLICA_HTTP": SYSTEMS[system]})
            try:
                url = f"{server.url}/v2/models/{model}/infer"
                closed_loop(url, bodies, 8, 2.0)  # warm-up
                for level in levels:
                    cell = closed_loop(url, bodies, level, seconds)
                    results.setdefault((system, level), []).append(cell)
                    print(f"{model} repeat {repeat} {system} c={level}: {cell['rps']:.0f} req/s, "
                          f"{cell['errors']} errors", flush=True)
            finally:
                stop_server(server)
            time.sleep(2)
    return results


def table(model: str, levels: list[int], results: dict) -> str:
    lines = [f"#### {model}", "", "| concurrency | system | req/s (median) | each repeat | p50 ms | p99 ms | errors | "
             "own / Ray's |", "|---|---|---|---|---|---|---|---|"]
    for level in levels:
        medians = {system: statistics.median(c["rps"] for c in results[(system, level)]) for system in SYSTEMS}
        for system in SYSTEMS:
            cells = results[(system, level)]
            ratio = f"{medians['own server'] / medians[system]:.2f}x" if system == "Ray's path" else ""
            lines.append(
                f"| {level} | {system} | {medians[system]:,.0f} | {' / '.join(f'{c['rps']:,.0f}' for c in cells)} | "
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
