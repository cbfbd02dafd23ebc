"""LiteRT artifacts served end to end: the real server on loopback with a Keras MLP (.tflite with a dynamic batch
axis) and a full-integer int8 CNN (batch_<N> signatures, int8 inputs and outputs), through the V2 API."""

from __future__ import annotations

import numpy as np
import pytest

from optiserve.local_server import start_server, stop_server
from tests.e2e.test_server import get, post_all
from tests.serve.runtimes.test_litert_model import (CNN_INPUTS, CNN_OUTPUTS, MLP_INPUTS, MLP_OUTPUTS, digit_rows,
                                                    keras_mlp, load, torch_cnn, write_int8_io_tflite,
                                                    write_keras_tflite, write_litert_artifact, write_signature_tflite)

pytest.importorskip("ai_edge_litert", reason="the litert extra: pip install optiserve[litert]")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """(Keras model, its artifact, the int8 CNN's artifact), both with manifest runtime litert."""
    folder = tmp_path_factory.mktemp("litert-e2e")
    model = keras_mlp()
    mlp = write_litert_artifact(folder / "mlp", write_keras_tflite(model, folder / "mlp.tflite"), "litert-mlp",
                                MLP_INPUTS, MLP_OUTPUTS)
    float_cnn = write_signature_tflite(torch_cnn(), folder / "cnn.tflite")
    cnn = write_litert_artifact(folder / "cnn", write_int8_io_tflite(float_cnn, folder / "cnn_int8.tflite",
                                                                    digit_rows(100)),
                                "litert-cnn-int8", CNN_INPUTS, CNN_OUTPUTS)
    return model, mlp, cnn


@pytest.fixture(scope="module")
def litert_server(artifacts, tmp_path_factory):
    log = tmp_path_factory.mktemp("litert-server") / "server.log"
    running = start_server([artifacts[1], artifacts[2]], log, "--max-wait-ms", "5")
    yield running
    assert stop_server(running) == 0, f"server did not stop cleanly:\n{log.read_text()[-3000:]}"


def _body(name: str, rows: np.ndarray) -> dict:
    return {"inputs": [{"name": name, "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}


def _served(answer: dict, output: str) -> np.ndarray:
    (tensor,) = [t for t in answer["outputs"] if t["name"] == output]
    assert tensor["datatype"] == "FP32"
    return np.array(tensor["data"], np.float32).reshape(tensor["shape"])


def test_litert_artifacts_are_served_with_the_right_answers_platform_and_errors(litert_server, artifacts):
    keras_model, _, cnn_artifact = artifacts
    rows = digit_rows(24)
    url = f"{litert_server.url}/v2/models"

    # the Keras MLP: requests of 1..3 rows, batched together by the server, each answered as Keras answers it
    bodies = [_body("input", rows[i:i + 1 + i % 3]) for i in range(16)]
    answers = post_all(f"{url}/litert-mlp/infer", bodies)
    assert [status for status, _ in answers] == [200] * len(bodies), answers[:2]
    for i, (_, answer) in enumerate(answers):
        expected = keras_model(rows[i:i + 1 + i % 3], training=False).numpy()
        np.testing.assert_allclose(_served(answer, "logits"), expected, atol=1e-5)

    # the int8 CNN: both outputs, each row as the runner answers it alone (int8 in and out, float32 over HTTP)
    images = rows.reshape(-1, 1, 8, 8)
    answers = post_all(f"{url}/litert-cnn-int8/infer", [_body("images", images[i:i + 1]) for i in range(24)])
    assert [status for status, _ in answers] == [200] * 24
    alone = load(cnn_artifact).run({"images": images})
    for output in ("logits", "features"):
        served = np.concatenate([_served(answer, output) for _, answer in answers])
        np.testing.assert_allclose(served, alone[output], atol=1e-6)

    status, metadata = get(f"{url}/litert-mlp")
    assert status == 200 and metadata["platform"] == "tflite"
    assert metadata["execution_provider"] == "litert:cpu (XNNPACK, 1 thread, dynamic batch)"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    status, metadata = get(f"{url}/litert-cnn-int8")
    assert status == 200 and "batch signatures 1..8" in metadata["execution_provider"]

    ((status, error),) = post_all(f"{url}/litert-mlp/infer", [_body("input", rows[:2, :63])])
    assert status == 400 and "[-1, 64]" in error["error"], error
