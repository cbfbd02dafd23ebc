"""Two or more server configurations side by side, measured cell by cell: an A/B of settings.

    .venv/bin/python benchmarks/ab_bench.py [--models digits minilm] [--concurrency 1 8 32 128]
        [--repeats 3] [--seconds 6] [--replicas 2]
        [--variant NAME KEY=VALUE ... --variant NAME KEY=VALUE ...] [--server-args ARG ...]

Each `--variant` is a name and the environment (OPTISERVE_* settings, or anything else the server reads) of
one `optiserve serve`, or `ARTIFACT=path` to serve another artifact of the model (an A/B of artifacts, with
the same name); the first variant is the baseline the others are compared with. Without
`--variant`, the replicas' own HTTP servers (`OPTISERVE_REPLICA_HTTP=true`, the default) are compared with
Ray Serve's request path (`false`), through the same HAProxy ingress. Every server runs the whole time (each
idle while another is measured); cells rotate which variant goes first, so that a machine that drifts
during the run weighs on all alike. The closed-loop load client (benchmarks/load_client.py) sends
cache-cold requests at each concurrency, after a 2 s warm-up. Prints the median requests per second and
p50/p99 of each variant, and its ratio to the baseline. docs/BENCHMARKS.md records the runs.
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

from benchmarks.load_client import bodies_for, closed_loop  # noqa: E402
from optimize.measure import cpu_name  # noqa: E402
from optiserve.local_server import start_server, stop_server  # noqa: E402

Variants = dict[str, dict[str, str]]
REPLICA_HTTP = {"own server": {"OPTISERVE_REPLICA_HTTP": "true"}, "Ray's path": {"OPTISERVE_REPLICA_HTTP": "false"}}


ARTIFACT_KEY = "ARTIFACT"  # `--variant NAME ARTIFACT=path`: that variant serves this artifact directory


def parse_variant(words: list[str]) -> tuple[str, dict[str, str]]:
    """["name", "KEY=VALUE", ...] as (name, {KEY: VALUE}); a variant with no settings is the default server."""
    name, *settings = words
    environment = {}
    for setting in settings:
        key, equals, value = setting.partition("=")
        if not equals or not key:
            raise SystemExit(f"--variant {name}: expected KEY=VALUE settings, got {setting!r}")
        environment[key] = value
    return name, environment


def rotation(names: list[str], turn: int) -> list[str]:
    """The variants in the order cell `turn` measures them: each one first in turn."""
    shift = turn % len(names)
    return names[shift:] + names[:shift]


def run(model: str, variants: Variants, levels: list[int], repeats: int, seconds: float,
        server_args: list[str]) -> dict:
    artifact = ROOT / "artifacts" / model
    bodies = bodies_for(model, artifact)
    servers = {}
    try:
        for index, (name, environment) in enumerate(variants.items()):
            log = Path(tempfile.gettempdir()) / f"ab_bench_{model}_{index}.log"
            own = dict(environment)
            served = Path(own.pop(ARTIFACT_KEY, artifact))  # a variant may serve another artifact of the model
            servers[name] = start_server([served], log, *server_args, env=own)
        urls = {name: f"{server.url}/v2/models/{model}/infer" for name, server in servers.items()}
        for url in urls.values():
            closed_loop(url, bodies, 8, 2.0)  # warm-up
        results: dict[tuple[str, int], list[dict]] = {}
        for repeat in range(repeats):
            for level in levels:
                for name in rotation(list(variants), repeat + levels.index(level)):
                    cell = closed_loop(urls[name], bodies, level, seconds)
                    results.setdefault((name, level), []).append(cell)
                    print(f"{model} repeat {repeat} c={level} {name}: {cell['rps']:.0f} req/s, "
                          f"{cell['errors']} errors", flush=True)
        return results
    finally:
        for server in servers.values():
            stop_server(server)


def table(model: str, names: list[str], levels: list[int], results: dict) -> str:
    baseline = names[0]
    lines = [f"#### {model}", "",
             f"| concurrency | variant | req/s (median) | each repeat | p50 ms | p99 ms | errors | / {baseline} |",
             "|---|---|---|---|---|---|---|---|"]
    for level in levels:
        medians = {name: statistics.median(c["rps"] for c in results[(name, level)]) for name in names}
        for name in names:
            cells = results[(name, level)]
            ratio = f"{medians[name] / medians[baseline]:.2f}x" if name != baseline else ""
            each = " / ".join(f"{cell['rps']:,.0f}" for cell in cells)
            lines.append(
                f"| {level} | {name} | {medians[name]:,.0f} | {each} | "
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
    parser.add_argument("--variant", nargs="+", action="append", metavar="NAME [KEY=VALUE]",
                        help="a server configuration: its name, then its environment "
                             "(repeat; the first is the baseline)")
    parser.add_argument("--server-args", nargs="*", default=[],
                        help="more `optiserve serve` arguments, for every variant")
    args = parser.parse_args()
    parsed = [parse_variant(words) for words in args.variant] if args.variant else list(REPLICA_HTTP.items())
    variants = dict(parsed)
    if len(variants) < 2 or len(variants) < len(parsed):
        parser.error("expected at least two variants, each with its own name")
    if len(set(args.concurrency)) < len(args.concurrency):
        parser.error("expected each concurrency once")
    server_args = ["--replicas", str(args.replicas), *args.server_args]
    print(f"{cpu_name()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    names = list(variants)
    print("\n\n".join(table(model, names, args.concurrency,
                            run(model, variants, args.concurrency, args.repeats, args.seconds, server_args))
                      for model in args.models))


if __name__ == "__main__":
    main()
