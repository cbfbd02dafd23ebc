"""Text in, embeddings out: all-MiniLM-L6-v2 served with BYTES input, tokenized in the replica.

Served embeddings are checked against sentence-transformers' own output for
the same sentences, alone and batched with sentences of other lengths.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import numpy as np
import pytest
import tritonclient.http as triton

from optimize.demos.minilm import minilm_path
from optimize.manifest import read_manifest
from optimize.demos.sentences import generate_sentences
from optiserve.local_server import start_server, stop_server
from tests.e2e.test_server import get, post_all, post_all_with_headers

MODEL_URL = "/v2/models/minilm"
SENTENCES = generate_sentences(40, seed=11) + ["", "Ünïcödé, emoji 🚀 and 中文 survive tokenization.", "word " * 400]


def text_body(texts: list[str]) -> dict:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}


def embeddings(answer: dict) -> np.ndarray:
    output = answer["outputs"][0]
    assert output["name"] == "embedding" and output["datatype"] == "FP32"
    return np.array(output["data"], dtype=np.float32).reshape(output["shape"])


@pytest.fixture(scope="module")
def text_server(minilm_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("text-server") / "server.log"
    running = start_server([minilm_artifact], log, "--max-wait-ms", "5")
    yield running
    assert stop_server(running) == 0, f"server did not stop cleanly:\n{log.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def reference():
    """sentence-transformers' own embeddings of SENTENCES (the model the artifact was exported from)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_path()), device="cpu")
    return model.encode(SENTENCES, batch_size=8, normalize_embeddings=True)


@pytest.fixture(scope="module")
def tolerance(minilm_artifact):
    return read_manifest(minilm_artifact).batch_deviation * 1.5 + 1e-4


def test_metadata_says_the_model_takes_strings(text_server):
    status, metadata = get(f"{text_server.url}{MODEL_URL}")
    assert status == 200
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]


def test_served_embeddings_match_sentence_transformers(text_server, reference, tolerance):
    """Each sentence in its own request, sent concurrently, so the batcher mixes lengths."""
    answers = post_all(f"{text_server.url}{MODEL_URL}/infer", [text_body([s]) for s in SENTENCES])
    assert [status for status, _ in answers] == [200] * len(SENTENCES)
    served = np.concatenate([embeddings(answer) for _, answer in answers])
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(served, reference, atol=tolerance)


def test_a_sentence_alone_matches_itself_inside_a_full_batch(text_server, reference, tolerance):
    """Padding to the batch's longest sentence must not change a short sentence's embedding."""
    batch = SENTENCES[:32]
    (status_batch, together), = post_all(f"{text_server.url}{MODEL_URL}/infer", [text_body(batch)])
    assert status_batch == 200
    together = embeddings(together)
    for index in (0, 5, 17):
        (status, alone), = post_all(f"{text_server.url}{MODEL_URL}/infer", [text_body([batch[index]])])
        assert status == 200
        np.testing.assert_allclose(embeddings(alone)[0], together[index], atol=tolerance)


def test_a_cached_text_answer_equals_the_computed_one(text_server):
    body = text_body(["The cache must return exactly what the model computed."])
    (first_status, first_headers, first), (second_status, second_headers, second) = post_all_with_headers(
        f"{text_server.url}{MODEL_URL}/infer", [body, body], concurrency=1
    )
    assert first_status == second_status == 200
    sources = [{k.lower(): v for k, v in headers.items()}["x-optiserve-cache"] for headers in (first_headers, second_headers)]
    assert sources == ["miss", "hit"]
    assert first["outputs"] == second["outputs"]
    (_, _, other), = post_all_with_headers(f"{text_server.url}{MODEL_URL}/infer",
                                           [text_body(["A different sentence is a different key."])])
    assert other["outputs"] != first["outputs"]


@pytest.mark.parametrize("tensor, expected", [
    ({"name": "text", "shape": [2], "datatype": "BYTES", "data": ["one", 2]}, "expected BYTES data as strings"),
    ({"name": "text", "shape": [3], "datatype": "BYTES", "data": ["one", "two"]}, "needs 3 strings, got 2"),
    ({"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}, "expected datatype BYTES"),
    ({"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["x"]}, "expected shape [-1]"),
    ({"name": "input_ids", "shape": [1], "datatype": "INT64", "data": [101]}, "expected inputs: text"),
])
def test_bad_text_requests_get_a_400_saying_what_was_expected(text_server, tensor, expected):
    (status, answer), = post_all(f"{text_server.url}{MODEL_URL}/infer", [{"inputs": [tensor]}])
    assert status == 400
    assert expected in answer["error"]


def test_tritonclient_sends_strings_as_binary_bytes(text_server, reference, tolerance):
    client = triton.InferenceServerClient(urlsplit(text_server.url).netloc)
    try:
        texts = np.array([s.encode() for s in SENTENCES[:4]], dtype=object)
        request = triton.InferInput("text", [len(texts)], "BYTES")
        request.set_data_from_numpy(texts, binary_data=True)
        served = client.infer("minilm", [request]).as_numpy("embedding")
    finally:
        client.close()
    np.testing.assert_allclose(served, reference[:4], atol=tolerance)


def test_binary_text_that_is_not_utf8_gets_a_400(text_server):
    header = b'{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}'
    body = header + (2).to_bytes(4, "little") + b"\xff\xfe"
    (status, answer), = post_all(
        f"{text_server.url}{MODEL_URL}/infer", [body], headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert status == 400
    assert "not valid UTF-8" in answer["error"]


def test_text_over_the_string_limit_or_count_is_refused_before_tokenizing(text_server):
    long_text = "word " * ((70 << 10) // 5)  # 70 KiB: over the default max_string_bytes of 64 KiB
    many = [f"sentence {i}" for i in range(4097)]  # over the default max_strings of 4096
    answers = post_all(f"{text_server.url}{MODEL_URL}/infer", [text_body(["fine", long_text]), text_body(many)])
    assert [status for status, _ in answers] == [413, 413], answers
    assert "string 1 is over 65536 bytes" in answers[0][1]["error"]
    assert "more than 4096 BYTES elements" in answers[1][1]["error"]
