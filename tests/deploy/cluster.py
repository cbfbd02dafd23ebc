"""A real multi-node Ray cluster on this machine, started with the documented `ray start` commands."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from optiserve.local_server import free_ports

BIN = Path(sys.executable).parent


def node_environment() -> dict[str, str]:
    """What `eval "$(optiserve ray-env)"` sets, plus token auth off for this throwaway local cluster."""
    printed = subprocess.run([str(BIN / "optiserve"), "ray-env"], capture_output=True, text=True, check=True).stdout
    # each line is `export NAME=VALUE` with VALUE shell-quoted, as eval would read it
    exports = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in printed.splitlines())
    return {**os.environ, **exports, "RAY_AUTH_MODE": "disabled"}


@dataclass
class RayCluster:
    gcs_address: str
    dashboard_url: str
    metrics_ports: list[int]
    env: dict[str, str]

    def ray(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run([str(BIN / "ray"), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        return result.stdout

    def serve(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run([str(BIN / "serve"), *args, "--address", self.dashboard_url],
                                env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"serve {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        return result.stdout

    def applications(self) -> dict:
        with urllib.request.urlopen(f"{self.dashboard_url}/api/serve/applications/", timeout=10) as response:
            return json.loads(response.read())["applications"]

    def wait_running(self, names: list[str], timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            apps = self.applications()
            if all(apps.get(n, {}).get("status") == "RUNNING" for n in names):
                return
            failed = {n: a.get("message") for n, a in apps.items() if a.get("status") == "DEPLOY_FAILED"}
            if failed:
                raise RuntimeError(f"deploy failed: {failed}")
            time.sleep(1)
        raise TimeoutError(f"applications {names} not RUNNING after {timeout_s}s: {self.applications()}")


def start_cluster(nodes: int = 2, cpus_per_node: int = 1) -> RayCluster:
    env = node_environment()
    port, dashboard_port, *node_ports = free_ports(1 + 2 * nodes)
    metrics_ports, agent_ports = node_ports[:nodes], node_ports[nodes:]  # the head's agent: Ray's default port
    cluster = RayCluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}", metrics_ports, env)
    common = ["--num-cpus", str(cpus_per_node), "--disable-usage-stats"]
    cluster.ray("start", "--head", "--port", str(port), "--dashboard-host", "127.0.0.1",
                "--system-config", json.dumps({"metrics_report_interval_ms": 1000}),
                "--dashboard-port", str(dashboard_port), "--metrics-export-port", str(metrics_ports[0]), *common)
    for metrics_port, agent_port in zip(metrics_ports[1:], agent_ports):
        cluster.ray("start", "--address", cluster.gcs_address, "--metrics-export-port", str(metrics_port),
                    "--dashboard-agent-listen-port", str(agent_port), *common)
    deadline = time.monotonic() + 60
    while cluster.ray("status", "--address", cluster.gcs_address).count(" node_") < nodes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"cluster did not reach {nodes} nodes")
        time.sleep(1)
    return cluster


def stop_cluster(cluster: RayCluster) -> None:
    """`serve shutdown` first: Ray 2.60's `ray stop` alone leaves the HAProxy process running."""
    try:
        with urllib.request.urlopen(f"{cluster.dashboard_url}/api/serve/applications/", timeout=10) as response:
            node_ids = list(json.loads(response.read()).get("proxies") or {})
        cluster.serve("shutdown", "--yes")
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        node_ids = []
    subprocess.run([str(BIN / "ray"), "stop", "--force"], env=cluster.env, capture_output=True, timeout=120)
    for node_id in node_ids:  # belt and braces: an HAProxy Ray left behind still holds the ports
        subprocess.run(["pkill", "-f", f"haproxy-serve/{node_id}/"], capture_output=True)
