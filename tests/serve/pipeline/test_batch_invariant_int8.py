"""Served answers of a per-row int8 text model (optimize/row_int8.py) do not depend on their batch-mates: a
sentence alone equals the same sentence inside a full batch of the longest sentences within 1e-5, and a cached
answer equals a fresh one. In process (no Ray), on all-MiniLM-L6-v2 quantized from the fp32 test artifact."""

import asyncio
import json
import shutil

import numpy as np
import pytest

from optimize.demos.sentences import generate_sentences
from optimize.manifest import read_manifest, sha256_of, write_manifest
from optimize.row_int8 import quantize_int8_per_row
from serve.pipeline.inference import CACHE_HEADER, InferencePipeline
from serve.settings import ServeSettings


@pytest.fixture(scope="module")
def per_row_minilm(minilm_artifact, tmp_path_factory):
    artifact = tmp_path_factory.mktemp("artifacts") / "minilm-per-row"
    shutil.copytree(minilm_artifact, artifact)
    step = quantize_int8_per_row(minilm_artifact / "model.onnx", artifact / "model.onnx")
    manifest = read_manifest(minilm_artifact)
    write_manifest(manifest.model_copy(update={"sha256": sha256_of(artifact / "model.onnx"),
                                               "steps": (*manifest.steps, step)}), artifact)
    return artifact


def embeddings(pipeline, texts: list[str]) -> tuple[np.ndarray, str]:
    body = json.dumps({"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]})

    async def read_body(max_bytes: int) -> bytes:
        return body.encode()

    reply = asyncio.run(pipeline.answer_inference({}, read_body, None))
    assert reply.status == 200, reply.body
    (output,) = json.loads(reply.body)["outputs"]
    return np.array(output["data"], dtype=np.float32).reshape(output["shape"]), reply.headers[CACHE_HEADER]


def test_a_sentence_alone_equals_itself_among_the_longest_sentences(per_row_minilm):
    pipeline = InferencePipeline(per_row_minilm, ServeSettings(cache_max_bytes=0, text_padding_limit=1.0))
    sentences = generate_sentences(64, seed=7)
    longest = sorted(sentences, key=len, reverse=True)[:31]
    for sentence in sentences[:6]:
        alone, _ = embeddings(pipeline, [sentence])
        crowded, _ = embeddings(pipeline, [sentence, *longest])  # one padded model call (padding limit 1)
        np.testing.assert_allclose(alone[0], crowded[0], atol=1e-5, rtol=0)


def test_a_cached_answer_equals_a_fresh_one(per_row_minilm):
    pipeline = InferencePipeline(per_row_minilm, ServeSettings())
    texts = generate_sentences(3, seed=8)
    fresh, first = embeddings(pipeline, texts)
    cached, second = embeddings(pipeline, texts)
    assert (first, second) == ("miss", "hit")
    np.testing.assert_array_equal(fresh, cached)
    uncached = InferencePipeline(per_row_minilm, ServeSettings(cache_max_bytes=0))
    np.testing.assert_allclose(embeddings(uncached, texts)[0], cached, atol=1e-5, rtol=0)
