"""deploy/serve_config.yaml deployed with `serve deploy` on a real 2-node Ray cluster on this machine.

Each node is its own raylet with 1 CPU and every model replica asks for 1 CPU,
so a second replica can only be placed on the second node.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import yaml

from optiserve.local_server import free_port, metric_sum, settled
from serve.on_ray.deployment_options import OWN_POLICY
from tests.deploy.cluster import RayCluster, start_cluster, stop_cluster
from tests.deploy.test_serve_config import load_config, model_apps

REPO = Path(__file__).resolve().parents[2]
AUTOSCALING_FOR_TEST = {  # the checked-in delays, shortened so the test takes seconds, not minutes
    "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4,
    "upscale_delay_s": 2, "downscale_delay_s": 8,
}


def write_config(path: Path, artifact: Path, port: int, **user_config) -> Path:
    config = load_config()
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    for app in model_apps(config):
        app["args"]["artifact_dir"] = str(artifact)
        deployment = app["deployments"][0]
        deployment["autoscaling_config"] = {**deployment["autoscaling_config"], **AUTOSCALING_FOR_TEST}
        deployment["user_config"] = {**deployment["user_config"], **user_config}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def cluster():
    running = start_cluster(nodes=2, cpus_per_node=1)
    yield running
    stop_cluster(running)


@pytest.fixture(scope="module")
def deployed(cluster: RayCluster, digits_artifact, tmp_path_factory):
    port = free_port()
    config = write_config(tmp_path_factory.mktemp("config") / "serve_config.yaml", digits_artifact, port)
    cluster.serve("deploy", str(config))
    cluster.wait_running(["digits", "optiserve"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the ingress learns routes shortly after the apps run
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return url, port
        except OSError:
            time.sleep(1)
    raise TimeoutError("deployed server never became ready")


def body(row: np.ndarray) -> bytes:
    import json

    return json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row.tolist()}]}).encode()


def replicas(cluster: RayCluster) -> list[dict]:
    deployment = cluster.applications()["digits"]["deployments"]["model-digits"]
    return [r for r in deployment["replicas"] if r["state"] == "RUNNING"]


def node_metric(cluster: RayCluster, name: str, **labels: str) -> float:
    """Summed over every node's metrics agent."""
    return metric_sum([f"http://127.0.0.1:{port}/metrics" for port in cluster.metrics_ports], name, **labels)


def settled_metric(cluster: RayCluster, name: str, **labels: str) -> float:
    """A reading once every replica's last report has arrived (two equal scrapes 2.5 s apart)."""
    return settled(lambda: node_metric(cluster, name, **labels), name, timeout_s=50)


async def load(url: str, concurrency: int, seconds: float, seed: int, log: list, until=lambda: False) -> None:
    """Closed-loop clients for at most `seconds`, or until `until()` holds; appends
    (finish time, latency s, HTTP status or exception name) to `log`."""
    rng = np.random.default_rng(seed)
    stop_at = time.monotonic() + seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def client():
            while time.monotonic() < stop_at and not until():
                payload = body(rng.random(64, dtype=np.float32))
                started = time.monotonic()
                try:
                    async with session.post(f"{url}/v2/models/digits/infer", data=payload) as response:
                        await response.read()
                        outcome = response.status
                except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                    outcome = type(error).__name__
                log.append((time.monotonic(), time.monotonic() - started, outcome))
        await asyncio.gather(*(client() for _ in range(concurrency)))


def test_deployed_config_answers_predictions(deployed):
    url, _ = deployed
    log: list = []
    asyncio.run(load(url, concurrency=4, seconds=2, seed=1, log=log))
    assert log and all(outcome == 200 for _, _, outcome in log)


def test_user_config_changes_batching_without_restarting_replicas(cluster, deployed, digits_artifact, tmp_path):
    url, port = deployed
    before_ids = {r["replica_id"] for r in replicas(cluster)}
    cluster.serve("deploy", str(write_config(tmp_path / "serve_config.yaml", digits_artifact, port, max_batch_size=1)))
    cluster.wait_running(["digits"])
    count = settled_metric(cluster, "ray_optiserve_batch_size_count", model="digits")
    singles = node_metric(cluster, "ray_optiserve_batch_size_bucket", model="digits", le="1.0")
    log: list = []
    asyncio.run(load(url, concurrency=32, seconds=3, seed=2, log=log))
    assert all(outcome == 200 for _, _, outcome in log)
    assert before_ids <= {r["replica_id"] for r in replicas(cluster)}, "reconfiguring restarted a replica"
    new_batches = settled_metric(cluster, "ray_optiserve_batch_size_count", model="digits") - count
    new_singles = node_metric(cluster, "ray_optiserve_batch_size_bucket", model="digits", le="1.0") - singles
    assert new_batches > 0 and new_batches == new_singles, "batches above max_batch_size=1 formed after reconfigure"
    cluster.serve("deploy", str(write_config(tmp_path / "serve_config.yaml", digits_artifact, port)))
    cluster.wait_running(["digits"])


def test_autoscaling_up_across_nodes_and_back_down_without_failures(cluster, deployed, tmp_path):
    url, _ = deployed
    log: list = []
    samples: list[tuple[float, int, int]] = []  # (time, running replicas, nodes hosting them)
    done = threading.Event()

    def sample():
        while not done.is_set():
            running = replicas(cluster)
            samples.append((time.monotonic(), len(running), len({r["node_id"] for r in running})))
            time.sleep(0.5)

    def held_since(condition, seconds: float, after: float) -> bool:
        """The latest samples, `seconds` back (taken after `after`), all satisfy `condition`."""
        recent = [s for s in samples if s[0] >= after]
        if not recent or recent[-1][0] - recent[0][0] < seconds:
            return False
        return all(condition(s) for s in recent if s[0] >= recent[-1][0] - seconds)

    sampler = threading.Thread(target=sample, daemon=True)
    began = time.monotonic()
    sampler.start()
    # Heavy load until two replicas on two nodes have served for 5 s (at most 90 s), then a
    # one-client trickle until one replica has served alone for 3 s (at most 120 s).
    asyncio.run(load(url, concurrency=24, seconds=90, seed=3, log=log,
                     until=lambda: held_since(lambda s: s[1] >= 2 and s[2] >= 2, 5, began)))
    trickle_began = time.monotonic()
    asyncio.run(load(url, concurrency=1, seconds=120, seed=4, log=log,
                     until=lambda: held_since(lambda s: s[1] == 1, 3, trickle_began)))
    done.set()
    sampler.join()

    plot_timeline(began, log, samples, tmp_path / "autoscaling.png")
    if os.environ.get("OPTISERVE_WRITE_DOCS"):
        plot_timeline(began, log, samples, REPO / "docs" / "autoscaling.png")
    failures = [outcome for _, _, outcome in log if outcome != 200]
    assert not failures, f"{len(failures)} of {len(log)} requests failed during scaling: {set(failures)}"
    assert max(count for _, count, _ in samples) >= 2, "never scaled above one replica under load"
    assert max(nodes for _, _, nodes in samples) >= 2, "replicas never spread over more than one node"
    assert samples[-1][1] == 1, f"did not scale back down to 1 replica after the load: {samples[-5:]}"


def plot_timeline(began: float, log: list, samples: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = int(max(t for t, _, _ in log) - began)  # whole seconds only: the last one is partial
    per_second: list[list[float]] = [[] for _ in range(seconds)]
    for finished, latency, outcome in log:
        if outcome == 200:
            if int(finished - began) < seconds:
                per_second[int(finished - began)].append(latency * 1e3)
    figure, (top, middle, bottom) = plt.subplots(3, 1, sharex=True, figsize=(8, 6.5))
    top.step([t - began for t, _, _ in samples], [n for _, n, _ in samples], where="post", label="replicas")
    top.step([t - began for t, _, _ in samples], [n for _, _, n in samples], where="post", linestyle="--",
             label="nodes hosting replicas")
    top.set_ylabel("count")
    top.legend(loc="upper right")
    middle.plot(range(seconds), [len(s) for s in per_second])
    middle.set_ylabel("req/s")
    bottom.plot(range(seconds), [np.percentile(s, 99) if s else np.nan for s in per_second])
    bottom.set_ylabel("p99 ms")
    bottom.set_xlabel("seconds (24 clients until scaled up, then 1 client until scaled down)")
    top.set_title("optiserve autoscaling on a 2-node Ray cluster (1 CPU per node)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def test_autoscaling_on_rays_default_policy_is_refused_with_the_fix(cluster, deployed, digits_artifact, tmp_path):
    """Without optiserve's policy the deployment would never scale up: its replicas refuse to start and say
    why, while the old replica keeps answering (max_surge_percent); the config with the policy line then
    deploys again."""
    url, port = deployed
    config = yaml.safe_load(write_config(tmp_path / "serve_config.yaml", digits_artifact, port).read_text())
    for app in model_apps(config):
        # the policy line alone: Ray 2.60 counts deployments' policies in an app's code version, so it rebuilds
        # the app and starts new replicas, which run the check (no lightweight update gets around it)
        del app["deployments"][0]["autoscaling_config"]["policy"]
    (tmp_path / "no_policy.yaml").write_text(yaml.safe_dump(config))
    cluster.serve("deploy", str(tmp_path / "no_policy.yaml"))
    deadline, status = time.monotonic() + 180, {}
    while time.monotonic() < deadline:
        status = cluster.applications().get("digits", {})
        if status.get("status") == "DEPLOY_FAILED":
            break
        time.sleep(1)
    assert status.get("status") == "DEPLOY_FAILED", f"deployed without optiserve's policy: {status}"
    why = status["deployments"]["model-digits"]["message"]  # the application's own message is generic
    assert OWN_POLICY in why and "min_replicas" in why, why
    log: list = []
    asyncio.run(load(url, concurrency=2, seconds=1, seed=4, log=log))  # the old replica, still serving
    assert log and all(outcome == 200 for _, _, outcome in log), {outcome for _, _, outcome in log}
    cluster.serve("deploy", str(write_config(tmp_path / "serve_config.yaml", digits_artifact, port)))
    deadline = time.monotonic() + 60
    while cluster.applications()["digits"]["status"] == "DEPLOY_FAILED" and time.monotonic() < deadline:
        time.sleep(0.5)  # until the controller has taken the new config
    cluster.wait_running(["digits"])  # the config with the policy line deploys again
    log: list = []
    asyncio.run(load(url, concurrency=2, seconds=1, seed=5, log=log))
    assert log and all(outcome == 200 for _, _, outcome in log), {outcome for _, _, outcome in log}
