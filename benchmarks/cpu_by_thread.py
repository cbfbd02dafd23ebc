"""Where the CPU goes while the server is under load: per process, and per thread inside each model replica.

    .venv/bin/python benchmarks/cpu_by_thread.py minilm --concurrency 128 [--seconds 10] [--replicas 2]

Starts `optiserve serve` on artifacts/<model>, warms it up, then runs the closed-loop load client for
`--seconds` and prints the CPU time each process and each replica thread used, as a share of one core and
in microseconds per request. Replica threads are named from `py-spy dump` (the batcher's worker,
the event loop, Ray's threads); threads Python does not know are shown with their kernel name.
docs/BENCHMARKS.md ("Where the CPU goes on 2 cores") was measured this way.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load_client import bodies_for, closed_loop  # noqa: E402
from optiserve.local_server import start_server, stop_server  # noqa: E402

_PY_SPY_THREAD = re.compile(r'Thread (\d+) \((?:idle|active)[^)]*\): "([^"]*)"')


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, tuple[str, float]]:
    """{pid: (name, user + system seconds)} for the processes still alive."""
    times = {}
    for process in processes:
        try:
            used = process.cpu_times()
            times[process.pid] = (process.name(), used.user + used.system)
        except psutil.Error:
            pass
    return times


def thread_seconds(processes: list[psutil.Process]) -> dict[tuple[int, int], float]:
    """{(pid, thread id): user + system seconds} for every thread of `processes`."""
    return {(process.pid, thread.id): thread.user_time + thread.system_time
            for process in processes for thread in process.threads()}


def thread_names(pid: int) -> dict[int, str]:
    """Python's names for the threads of `pid` (py-spy), by kernel thread id; empty without py-spy."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    try:
        dump = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {int(tid): name for tid, name in _PY_SPY_THREAD.findall(dump)}


def process_name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:  # gone meanwhile
        return ""


def kernel_name(pid: int, tid: int) -> str:
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["digits", "minilm"])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    artifact = ROOT / "artifacts" / args.model
    bodies = bodies_for(args.model, artifact)
    with tempfile.TemporaryDirectory() as logs:
        server = start_server([artifact], Path(logs) / "server.log", "--replicas", str(args.replicas))
        try:
            url = f"{server.url}/v2/models/{args.model}/infer"
            closed_loop(url, bodies, args.concurrency, 2)  # warm-up
            processes = list(psutil.process_iter())
            replicas = [p for p in processes if f"model-{args.model}" in process_name(p)]
            names = {tid: name for replica in replicas for tid, name in thread_names(replica.pid).items()}
            before, threads_before, started = cpu_seconds(processes), thread_seconds(replicas), time.monotonic()
            cell = closed_loop(url, bodies, args.concurrency, args.seconds)
            after, threads_after, wall = cpu_seconds(processes), thread_seconds(replicas), time.monotonic() - started
        finally:
            stop_server(server)
    requests = cell["rps"] * wall
    print(f"{args.model}, c={args.concurrency}, {args.replicas} replicas: {cell['rps']:,.0f} req/s, "
          f"p50 {cell['p50_ms']:.2f} ms, {cell['errors']} errors\n")
    print("| process | share of one core | us per request |\n|---|---|---|")
    used = sorted(((after[pid][1] - before[pid][1], after[pid][0]) for pid in after if pid in before), reverse=True)
    for seconds, name in used[:12]:
        print(f"| {name} | {seconds / wall:.1%} | {seconds / requests * 1e6:,.0f} |")
    print(f"| all processes | {sum(s for s, _ in used) / wall:.1%} | {sum(s for s, _ in used) / requests * 1e6:,.0f} |")
    by_thread: dict[str, float] = {}
    for (pid, tid), seconds in threads_after.items():
        name = names.get(tid) or f"(native) {kernel_name(pid, tid)}"
        by_thread[name] = by_thread.get(name, 0.0) + seconds - threads_before.get((pid, tid), 0.0)
    print("\n| replica threads (all replicas) | share of one core | us per request |\n|---|---|---|")
    for name, seconds in sorted(by_thread.items(), key=lambda item: -item[1]):
        if seconds / requests * 1e6 >= 1:
            print(f"| {name} | {seconds / wall:.1%} | {seconds / requests * 1e6:,.0f} |")


if __name__ == "__main__":
    main()
