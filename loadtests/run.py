"""`make loadtest`: run loadtests/locustfile.py headless against a server, writing CSV and HTML reports.

    python -m loadtests.run [--url http://host:port] [--out DIR] -- LOCUST_ARGS...

Without --url it starts `optiserve serve` on loopback for the run (artifacts/digits,
and artifacts/minilm when MiniLMUser is asked for) and stops it afterwards.
LOCUST_ARGS go to locust unchanged (user classes, -u, -t, --shape, --inputs,
--slo-*; see loadtests/README.md). The exit code is locust's: 3 when an
objective (--slo-p99-ms, --slo-error-ratio) was missed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from optiserve.local_server import RunningServer, start_server, stop_server

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
ARTIFACTS = {"DigitsUser": Path("artifacts/digits"), "MiniLMUser": Path("artifacts/minilm")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="load this server instead of starting one (e.g. http://127.0.0.1:8000)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/loadtest"), help="directory for the reports")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra `optiserve serve` flag for the server started here (repeatable)")
    parser.add_argument("locust_args", nargs=argparse.REMAINDER, help="after --: arguments for locust")
    args = parser.parse_args(argv)
    locust_args = [a for a in args.locust_args if a != "--"] or ["DigitsUser", "-u", "16", "-t", "60s"]
    prefix = args.out / time.strftime("%Y%m%d-%H%M%S")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    server = None if args.url else _start_for(locust_args, prefix, args.server_arg)
    try:
        return _run_locust(args.url or server.url, prefix, locust_args)
    finally:
        if server is not None:
            stop_server(server)


def _start_for(locust_args: list[str], prefix: Path, server_args: list[str]) -> RunningServer:
    wanted = [user for user in ARTIFACTS if user in locust_args] or ["DigitsUser"]
    missing = [str(ARTIFACTS[user]) for user in wanted if not (ARTIFACTS[user] / "manifest.json").exists()]
    if missing:
        raise SystemExit(f"loadtest: no artifact at {', '.join(missing)}; build it first "
                         "(make demo for digits, make minilm for MiniLM) or pass --url")
    log = prefix.with_name(prefix.name + "-server.log")
    print(f"loadtest: starting optiserve serve {' '.join(str(ARTIFACTS[u]) for u in wanted)} (log: {log})", flush=True)
    return start_server([ARTIFACTS[user] for user in wanted], log, *server_args)


def _run_locust(url: str, prefix: Path, locust_args: list[str]) -> int:
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
               "--csv", str(prefix), "--html", f"{prefix}.html", "--ledger", str(prefix), "--stop-timeout", "15",
               *locust_args]
    if not any(arg.startswith(("-t", "--run-time")) for arg in locust_args):
        command += ["--run-time", "60s"]  # never unbounded
    print(f"loadtest: {' '.join(command[3:])}", flush=True)
    code = subprocess.call(command)
    print(f"loadtest: reports {prefix}.html, {prefix}_stats.csv, {prefix}.json (ledger); locust exit code {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
