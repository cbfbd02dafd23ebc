"""`optiserve demo` (`make demo`): optimize the digits model, serve it, query it, stop it.

Everything is real: a PyTorch MLP trained on scikit-learn's bundled digits,
exported and quantized by `optimize`, served by Ray Serve on 127.0.0.1, and
queried over HTTP with held-out images.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import numpy as np

from optiserve.local_server import RunningServer, scrape, start_server, stop_server

ARTIFACT_DIR = Path("artifacts/digits")
SAMPLES = 8


def main() -> int:
    from optimize.demos.digits import load_split, trained_digits_classifier
    from optimize.pipeline import optimize_model
    from optimize.settings import OptimizeSettings

    print("== optimize: train on digits, export to ONNX, quantize, measure ==")
    optimize_model(trained_digits_classifier(), ARTIFACT_DIR, OptimizeSettings())
    _, _, test_x, test_y = load_split()

    print("\n== serve: Ray Serve on 127.0.0.1 (embedded local Ray instance) ==")
    log_path = Path("artifacts/demo-server.log")
    server = start_server(
        [ARTIFACT_DIR], log_path,
        port=int(os.environ.get("OPTISERVE_PORT", 8000)),
        metrics_port=int(os.environ.get("OPTISERVE_METRICS_PORT", 8080)),
    )
    try:
        print(f"server ready at {server.url}/v2 (log: {log_path}); metrics at {server.metrics_url}")
        before = _metric_lines(server)
        _query(server, test_x[:SAMPLES], test_y[:SAMPLES])
        _query(server, test_x[:1], test_y[:1], title="the first image again (served from the cache)")
        after = _settled_metric_lines(server)
        print("\n== metrics that changed ==")
        for key, value in after.items():
            if before.get(key) != value:
                print(f"{key} {before.get(key, 0):g} -> {value:g}")
    finally:
        code = stop_server(server)
        print(f"\nserver stopped (exit code {code})")
    return 0 if code == 0 else 1


def _query(server: RunningServer, images: np.ndarray, labels: np.ndarray, title: str = "held-out images") -> None:
    print(f"\n{title}:\n  image  true  predicted")
    for index, (image, label) in enumerate(zip(images, labels)):
        body = {"id": f"demo-{index}", "inputs": [
            {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": image.tolist()}]}
        request = urllib.request.Request(
            f"{server.url}/v2/models/digits/infer", json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            logits = json.loads(response.read())["outputs"][0]["data"]
        predicted = int(np.argmax(logits))
        print(f"  {index:5d}  {label:4d}  {predicted:9d}  {'ok' if predicted == label else 'WRONG'}")


def _metric_lines(server: RunningServer) -> dict[str, float]:
    """optiserve's own series, summed over replicas, keyed by name and the labels that matter."""
    lines: dict[str, float] = {}
    for sample in scrape(server.metrics_url):
        # counts and totals tell the story; Ray's histogram _sum is approximate
        if not sample.name.startswith("ray_optiserve_") or sample.name.endswith(("_bucket", "_sum")):
            continue
        kept = ",".join(f'{label}="{sample.labels[label]}"' for label in ("model", "status") if label in sample.labels)
        key = f"{sample.name}{{{kept}}}"
        lines[key] = lines.get(key, 0.0) + sample.value
    return lines


def _settled_metric_lines(server: RunningServer) -> dict[str, float]:
    """Replicas report every couple of seconds: wait until two scrapes agree."""
    previous = _metric_lines(server)
    for _ in range(15):
        time.sleep(2.5)
        current = _metric_lines(server)
        if current == previous:
            return current
        previous = current
    return previous
