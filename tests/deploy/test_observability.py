"""A real Prometheus (Debian package) scrapes a running server with deploy/prometheus/prometheus.yml;
every Grafana dashboard query runs against it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from optiserve.local_server import free_port, start_server, stop_server
from optiserve.reference import metric_names
from tests.e2e.test_server import infer_body, post_all

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = shutil.which("prometheus")

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (`apt-get install prometheus`; .ci/run installs it)"
)


@pytest.fixture(scope="module")
def server(digits_artifact, tmp_path_factory):
    running = start_server([digits_artifact], tmp_path_factory.mktemp("obs") / "server.log")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def prometheus(server, tmp_path_factory):
    """The checked-in config, with the `ray` job pointed at this test server's metrics port."""
    work = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (ray_job,) = [job for job in config["scrape_configs"] if job["job_name"] == "ray"]
    ray_job["static_configs"] = [{"targets": [urllib.parse.urlsplit(server.metrics_url).netloc]}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=open(work / "prometheus.log", "w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: _get(f"{url}/-/ready") is not None, 60, "Prometheus never became ready")
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read()
    except OSError:
        return None


def _wait_until(condition, timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    raise AssertionError(message)


def query(prometheus_url: str, expression: str) -> dict:
    raw = _get(f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expression})}")
    assert raw is not None, f"Prometheus refused the query {expression!r}"
    answer = json.loads(raw)
    assert answer["status"] == "success", answer
    return answer["data"]


def test_prometheus_scrapes_the_servers_metrics(server, prometheus):
    bodies = [infer_body(np.full((1, 64), i / 100, dtype=np.float32)) for i in range(30)]
    assert all(status == 200 for status, _ in post_all(f"{server.url}/v2/models/digits/infer", bodies))

    def scraped_all() -> bool:
        result = query(prometheus, 'sum(ray_optiserve_requests_total{model="digits",status="200"})')["result"]
        return bool(result) and float(result[0]["value"][1]) >= 30

    _wait_until(scraped_all, 90, "Prometheus never saw the 30 requests")
    targets = json.loads(_get(f"{prometheus}/api/v1/targets"))["data"]["activeTargets"]
    assert any(t["labels"]["job"] == "ray" and t["health"] == "up" for t in targets)
    scraped = {name for name in json.loads(_get(f"{prometheus}/api/v1/label/__name__/values"))["data"]
               if name.startswith("ray_optiserve_")}
    documented = set(metric_names())
    assert scraped - documented == set(), "scraped but missing from docs/reference/metrics.md"
    assert {"ray_optiserve_requests_total", "ray_optiserve_request_latency_seconds_bucket"} <= scraped


def test_every_dashboard_query_runs_and_the_core_panels_have_data(server, prometheus):
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for needed in ("throughput", "p50", "p95", "p99", "queue time", "batch size", "cache hit", "replicas"):
        assert needed in titles, f"dashboard has no panel for {needed}"
    bodies = [infer_body(np.full((1, 64), 0.5, dtype=np.float32)) for _ in range(20)]  # repeats: cache hits
    post_all(f"{server.url}/v2/models/digits/infer", bodies, concurrency=4)
    time.sleep(12)  # two scrapes, so rate() over the window has two points
    with_data = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expression = target["expr"].replace("$model", ".*").replace("[1m]", "[5m]")
            if query(prometheus, expression)["result"]:
                with_data.add(panel["title"])
    for title in ("Throughput (requests/s by status)", "Request latency p50 / p95 / p99",
                  "Replicas (healthy, by deployment)", "Cache hit ratio",
                  "Wait at the ingress p50 / p99 (HAProxy's queue)"):
        assert title in with_data, f"panel {title!r} has no data"
