"""A TorchScript artifact (PyTorch's own static int8, x86 kernels) served on the CPU through the same API."""

from __future__ import annotations

import numpy as np
import pytest

from optimize.manifest import read_manifest, sha256_of, write_manifest
from optimize.torch_quantize import quantize_torch_static
from optiserve.local_server import start_server, stop_server
from tests.e2e.test_server import get, infer_body, post_all


@pytest.fixture(scope="module")
def torchscript_artifact(digits_artifact, digits_source, tmp_path_factory):
    artifact = tmp_path_factory.mktemp("artifacts") / "digits-ts"
    artifact.mkdir()
    step = quantize_torch_static(digits_source.module, digits_source.train_inputs, "x86", artifact / "model.pt")
    manifest = read_manifest(digits_artifact).model_copy(update={
        "name": "digits-ts", "runtime": "torchscript", "model_file": "model.pt",
        "sha256": sha256_of(artifact / "model.pt"), "steps": (step,),
    })
    write_manifest(manifest, artifact)
    return artifact


@pytest.fixture(scope="module")
def torchscript_server(torchscript_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("ts-server") / "server.log"
    running = start_server([torchscript_artifact], log)
    yield running
    assert stop_server(running) == 0, f"server did not stop cleanly:\n{log.read_text()[-3000:]}"


def test_torchscript_artifact_is_served_with_its_platform(torchscript_server):
    status, metadata = get(f"{torchscript_server.url}/v2/models/digits-ts")
    assert status == 200 and metadata["platform"] == "pytorch_libtorch"


def test_served_answers_are_the_quantized_modules_answers(torchscript_server, torchscript_artifact, digits_source):
    import torch

    module = torch.jit.load(str(torchscript_artifact / "model.pt"))
    rows = digits_source.validation_inputs[:16]
    answers = post_all(f"{torchscript_server.url}/v2/models/digits-ts/infer", [infer_body(r[None]) for r in rows])
    served = np.concatenate([np.array(a["outputs"][0]["data"], np.float32).reshape(1, 10) for _, a in answers])
    with torch.no_grad():
        expected = module(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-4)
    accuracy = float(np.mean(served.argmax(1) == digits_source.validation_labels[:16]))
    assert accuracy >= 0.8
