"""GPU-target artifacts through the real server on a CPU-only machine: fp16 ONNX and a torch.export
program answer FP32 requests (no GPU here, so replicas ask Ray for none and run on the CPU)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from optimize import measure
from optimize.pipeline import optimize_model
from optimize.settings import OptimizeSettings
from optiserve.local_server import start_server, stop_server
from tests.e2e.test_server import get, infer_body, post_all


@pytest.fixture(scope="module")
def gpu_artifacts(digits_source, tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    fp16, program = root / "digits-fp16", root / "digits-program"
    optimize_model(dataclasses.replace(digits_source, name="digits-fp16"), fp16,
                   OptimizeSettings(target="gpu", latency_repeats=10), log=lambda _: None)
    optimize_model(dataclasses.replace(digits_source, name="digits-program"), program,
                   OptimizeSettings(target="gpu", gpu_runtime="torch", latency_repeats=10), log=lambda _: None)
    return fp16, program


@pytest.fixture(scope="module")
def gpu_server(gpu_artifacts, tmp_path_factory):
    log = tmp_path_factory.mktemp("gpu-server") / "server.log"
    running = start_server(list(gpu_artifacts), log)
    yield running
    assert stop_server(running) == 0, f"server did not stop cleanly:\n{log.read_text()[-3000:]}"


@pytest.mark.parametrize("name", ["digits-fp16", "digits-program"])
def test_gpu_target_artifacts_answer_fp32_requests_with_fp32_accuracy(gpu_server, digits_source, name):
    status, metadata = get(f"{gpu_server.url}/v2/models/{name}")
    assert status == 200 and metadata["inputs"][0]["datatype"] == "FP32"
    rows, labels = digits_source.validation_inputs[:64], digits_source.validation_labels[:64]
    answers = post_all(f"{gpu_server.url}/v2/models/{name}/infer", [infer_body(r[None]) for r in rows])
    served = np.concatenate([np.array(a["outputs"][0]["data"], np.float32).reshape(1, 10) for _, a in answers])
    assert measure.top1_accuracy(served, labels) >= 0.9
