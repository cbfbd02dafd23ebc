"""Run `optiserve serve` as a child process on loopback, wait for it, scrape it, stop it.

Used by `optiserve demo`, the end-to-end tests and the benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from prometheus_client.parser import text_string_to_metric_families

STARTUP_TIMEOUT_S = 180


def free_ports(count: int) -> list[int]:
    """`count` different loopback ports, free now. Each stays bound until all are chosen: one bind-and-close at
    a time can give the same port twice (seen: a server's HTTP and metrics ports, so Ray's metrics agent took
    the port before HAProxy could)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port() -> int:
    return free_ports(1)[0]


def scrape(metrics_url: str) -> list:
    """Every sample on a Prometheus text endpoint."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def metric_sum(metrics_urls: list[str], name: str, **labels: str) -> float:
    """Sum a metric over every matching series on every endpoint (every replica, every node)."""
    return sum(
        sample.value for url in metrics_urls for sample in scrape(url)
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def settled(read: Callable[[], float], what: str, settle_s: float = 2.5, timeout_s: float = 30) -> float:
    """Ray reports metrics every few seconds: read until two readings `settle_s` apart agree."""
    deadline = time.monotonic() + timeout_s
    previous = read()
    while time.monotonic() < deadline:
        time.sleep(settle_s)
        current = read()
        if current == previous:
            return current
        previous = current
    raise AssertionError(f"{what} kept changing for {timeout_s}s")


@dataclass
class RunningServer:
    url: str
    metrics_url: str
    process: subprocess.Popen
    log_path: Path

    def metric_total(self, name: str, **labels: str) -> float:
        """Sum a metric over every series (every replica) whose labels match."""
        return metric_sum([self.metrics_url], name, **labels)

    def series(self, name: str) -> list[dict[str, str]]:
        return [sample.labels for sample in scrape(self.metrics_url) if sample.name == name]

    def settled_total(self, name: str, settle_s: float = 2.5, timeout_s: float = 30, **labels: str) -> float:
        """A reading taken once earlier requests have all been reported (two equal scrapes settle_s apart)."""
        return settled(lambda: self.metric_total(name, **labels), f"{name} {labels}", settle_s, timeout_s)

    def wait_for_metric(self, name: str, at_least: float, timeout_s: float = 30, **labels: str) -> float:
        """Metrics reach the agent every few seconds: poll until the sum reaches `at_least`."""
        deadline = time.monotonic() + timeout_s
        value = self.metric_total(name, **labels)
        while value < at_least and time.monotonic() < deadline:
            time.sleep(0.5)
            value = self.metric_total(name, **labels)
        return value


def start_server(
    artifacts: list[Path], log_path: Path, *extra_args: str, port: int = 0, metrics_port: int = 0,
    env: dict[str, str] | None = None,
) -> RunningServer:
    """Start the server (free loopback ports unless given) and return once /v2/health/ready says so.
    (The server itself starts Ray once more if Ray's node times out during startup: serve/on_ray/runner.py.)"""
    return wait_until_ready(launch_server(artifacts, log_path, *extra_args, port=port, metrics_port=metrics_port,
                                          env=env))


def launch_server(
    artifacts: list[Path], log_path: Path, *extra_args: str, port: int = 0, metrics_port: int = 0,
    env: dict[str, str] | None = None,
) -> RunningServer:
    """Start the server process and return at once, while it is still starting."""
    spare = [chosen for chosen in free_ports(4) if chosen not in (port, metrics_port)]
    port, metrics_port = port or spare.pop(), metrics_port or spare.pop()
    command = [
        sys.executable, "-m", "optiserve.cli", "serve", *map(str, artifacts),
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port), *extra_args,
    ]
    log = open(log_path, "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env=child_environment(spare.pop(), spare.pop(), env))
    return RunningServer(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics", process, log_path)


def wait_until_ready(server: RunningServer) -> RunningServer:
    """Poll /v2/health/ready until it answers 200; stop the server and raise if it exits or takes too long."""
    process, log_path = server.process, server.log_path
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(1)
    stop_server(server)
    raise RuntimeError(f"server not ready after {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")


def child_environment(haproxy_metrics_port: int, haproxy_stats_port: int,
                      extra: dict[str, str] | None) -> dict[str, str]:
    """A server's environment: this one's, then `extra`. HAProxy's metrics and stats ports are fixed by default
    (9101, 8404, all interfaces): the free loopback ports given here, where the environment sets none, let
    several local servers coexist."""
    haproxy_ports = {"RAY_SERVE_HAPROXY_METRICS_PORT": str(haproxy_metrics_port),
                     "RAY_SERVE_HAPROXY_STATS_PORT": str(haproxy_stats_port)}
    return {**haproxy_ports, **os.environ, **(extra or {})}


def stop_server(server: RunningServer, timeout_s: float = 60) -> int:
    server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        return server.process.wait()
