"""An off-the-shelf client, Triton's tritonclient.http, works unchanged (binary tensors by default)."""

from urllib.parse import urlsplit

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

from optimize.manifest import read_manifest
from tests.docs.snippets import python_snippet


@pytest.fixture(scope="module")
def client(server):
    connection = triton.InferenceServerClient(urlsplit(server.url).netloc)
    yield connection
    connection.close()


def infer(client, rows: np.ndarray, binary: bool) -> np.ndarray:
    request = triton.InferInput("input", list(rows.shape), "FP32")
    request.set_data_from_numpy(rows, binary_data=binary)
    wanted = triton.InferRequestedOutput("logits", binary_data=binary)
    return client.infer("digits", [request], outputs=[wanted]).as_numpy("logits")


@pytest.mark.parametrize("binary", [True, False], ids=["binary tensors", "JSON tensors"])
def test_tritonclient_gets_the_models_answer(client, digits_artifact, binary):
    rows = np.random.default_rng(5).random((4, 64), dtype=np.float32)
    session = ort.InferenceSession(str(digits_artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    tolerance = read_manifest(digits_artifact).batch_deviation * 1.5 + 1e-5
    np.testing.assert_allclose(infer(client, rows, binary), session.run(None, {"input": rows})[0], atol=tolerance)


def test_tritonclient_sees_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("digits")
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]


def test_the_readme_client_snippet_prints_a_digit(server, capsys):
    snippet = python_snippet("README.md", "tritonclient.http")
    assert '"127.0.0.1:8000"' in snippet
    exec(snippet.replace('"127.0.0.1:8000"', repr(urlsplit(server.url).netloc)), {})
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("[") and printed.strip("[]").isdigit(), printed
