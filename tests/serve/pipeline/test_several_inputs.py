"""A model with two named inputs, token ids and an attention mask sharing [batch, sequence], in-process through
the real InferencePipeline and onnxruntime (no Ray): what onnxruntime cannot check before it runs (inputs that
share an axis agree, ids index rows the table has) is a 400 naming what was expected, never a 500; good requests
queued beside refused ones are all answered; older manifests, without the axes' names and the ids' range, get
nothing extra checked."""

import asyncio
import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from optimize.manifest import TensorSpec, read_manifest, write_manifest
from serve.http.binary import HEADER_LENGTH
from serve.http.input_rules import shared_axis_problem
from serve.http.protocol import ProtocolError, decode_inputs, parse_request
from serve.settings import ServeSettings
from tests.serve.pipeline.test_inference import build_pipeline

IDS, MASK = "input_ids", "attention_mask"


def tokens(rows: int, length: int, seed: int) -> dict[str, np.ndarray]:
    """Ids within the model's 50-row table and a mask keeping each row's first token and most others."""
    rng = np.random.default_rng(seed)
    mask = (rng.random((rows, length)) < 0.7).astype(np.int64)
    mask[:, 0] = 1
    return {IDS: rng.integers(0, 50, (rows, length), dtype=np.int64), MASK: mask}


def request_body(feed: dict[str, np.ndarray], binary: bool = False) -> tuple[bytes, dict[str, str]]:
    """The V2 request for `feed`: JSON data, or each input as binary data after the JSON header."""
    if not binary:
        inputs = [{"name": name, "shape": list(array.shape), "datatype": "INT64", "data": array.ravel().tolist()}
                  for name, array in feed.items()]
        return json.dumps({"inputs": inputs}).encode(), {}
    inputs = [{"name": name, "shape": list(array.shape), "datatype": "INT64",
               "parameters": {"binary_data_size": array.nbytes}} for name, array in feed.items()]
    header = json.dumps({"inputs": inputs}).encode()
    tail = b"".join(array.astype("<i8").tobytes() for array in feed.values())
    return header + tail, {HEADER_LENGTH.lower(): str(len(header))}


async def _answer_async(server, feed: dict[str, np.ndarray], binary: bool = False) -> tuple[int, dict]:
    body, headers = request_body(feed, binary)

    async def read_body(max_bytes: int) -> bytes:
        return body

    reply = await server.answer_inference(headers, read_body, None)
    return reply.status, json.loads(reply.body)


def answer(server, feed: dict[str, np.ndarray], binary: bool = False) -> tuple[int, dict]:
    return asyncio.run(_answer_async(server, feed, binary))


def answer_together(server, feeds: list[dict[str, np.ndarray]]) -> list[tuple[int, dict]]:
    """Every request sent at once on one event loop: all are queued before the batcher's first call."""
    async def all_at_once():
        return await asyncio.gather(*(_answer_async(server, feed) for feed in feeds))

    return asyncio.run(all_at_once())


def onnxruntime_says(artifact, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["pooled"], feed)[0]


def pooled(answer_body: dict) -> np.ndarray:
    (output,) = answer_body["outputs"]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


@pytest.fixture(scope="module")
def server(two_input_artifact):
    return build_pipeline(two_input_artifact)


def test_the_manifest_names_the_shared_axes_and_the_ids_range(two_input_artifact):
    ids, mask = read_manifest(two_input_artifact).inputs
    assert (ids.dim_names, mask.dim_names) == (("batch", "sequence"), ("batch", "sequence"))
    assert (ids.value_range, mask.value_range) == ((0, 49), None)


@pytest.mark.parametrize("rows, length, binary", [(1, 7, False), (3, 5, False), (2, 9, True)])
def test_a_good_request_gets_what_onnxruntime_computes(server, two_input_artifact, rows, length, binary):
    feed = tokens(rows, length, seed=rows * 100 + length)
    status, body = answer(server, feed, binary)
    assert status == 200, body
    np.testing.assert_allclose(pooled(body), onnxruntime_says(two_input_artifact, feed), rtol=1e-6)


def test_ids_at_the_edges_of_the_table_are_answered(server):
    feed = tokens(1, 4, seed=1)
    feed[IDS][0] = [0, 49, 0, 49]
    assert answer(server, feed)[0] == 200


def test_a_mask_of_another_length_is_a_400_naming_both_inputs(server):
    feed = {IDS: tokens(1, 7, seed=2)[IDS], MASK: tokens(1, 9, seed=3)[MASK]}
    assert answer(server, feed) == (400, {"error": "inputs 'input_ids' and 'attention_mask': axis 'sequence' "
                                                   "must have the same size, got 7 and 9"})


def test_a_mask_for_another_number_of_rows_is_a_400_naming_the_batch_axis(server):
    feed = {IDS: tokens(2, 5, seed=4)[IDS], MASK: tokens(3, 5, seed=5)[MASK]}
    assert answer(server, feed) == (400, {"error": "inputs 'input_ids' and 'attention_mask': axis 'batch' "
                                                   "must have the same size, got 2 and 3"})


@pytest.mark.parametrize("bad, binary", [(99999, False), (-1, False), (50, False), (99999, True), (-2**63, True)])
def test_ids_outside_the_table_are_a_400_naming_the_range_and_the_first_bad_id(server, bad, binary):
    feed = tokens(2, 6, seed=6)
    feed[IDS][1, 2] = bad
    feed[IDS][1, 4] = 77  # also out of range, after the first
    status, body = answer(server, feed, binary)
    assert (status, body) == (400, {"error": f"input 'input_ids': expected ids from 0 to 49 (the embedding "
                                             f"table's rows), got {bad} at flat index 8"})


def test_refused_requests_queued_beside_good_ones_lose_none_of_them(two_input_artifact):
    pipeline = build_pipeline(two_input_artifact, ServeSettings(max_wait_ms=50))
    good = [tokens(1, 6, seed=10 + index) for index in range(3)]
    out_of_range = tokens(1, 6, seed=20)
    out_of_range[IDS][0, 3] = 99999
    mismatched = {IDS: tokens(1, 6, seed=21)[IDS], MASK: tokens(1, 8, seed=22)[MASK]}
    answers = answer_together(pipeline, [good[0], out_of_range, good[1], mismatched, good[2]])
    assert [status for status, _ in answers] == [200, 400, 200, 400, 200], answers
    for feed, (_, body) in zip(good, answers[0::2]):
        np.testing.assert_allclose(pooled(body), onnxruntime_says(two_input_artifact, feed), rtol=1e-6)
    assert _model_calls_and_rows(pipeline) == (1, 3)  # the three good ones in one call, nothing else reached it


def test_requests_whose_sequences_differ_are_never_merged_into_one_call(two_input_artifact):
    pipeline = build_pipeline(two_input_artifact, ServeSettings(max_wait_ms=50))
    feeds = [tokens(1, 5, seed=30), tokens(2, 9, seed=31), tokens(1, 5, seed=32)]
    answers = answer_together(pipeline, feeds)
    for feed, (status, body) in zip(feeds, answers):
        assert status == 200, body
        np.testing.assert_allclose(pooled(body), onnxruntime_says(two_input_artifact, feed), rtol=1e-6)
    assert _model_calls_and_rows(pipeline) == (2, 4)  # the two of length 5 together, the one of length 9 alone


def _model_calls_and_rows(pipeline) -> tuple[int, int]:
    pipeline.metrics.flush()
    tags = {"model": pipeline.manifest.name, "version": pipeline.manifest.version}
    counted = pipeline.metrics_backend.value
    return counted("optiserve_batch_size_count", **tags), counted("optiserve_inference_rows", **tags)


@pytest.fixture(scope="module")
def older_artifact(two_input_artifact, tmp_path_factory):
    """The same model with the manifest an older optimizer wrote: no axis names, no id range."""
    artifact = tmp_path_factory.mktemp("older") / "two-inputs"
    shutil.copytree(two_input_artifact, artifact)
    manifest = read_manifest(artifact)
    inputs = tuple(spec.model_copy(update={"dim_names": None, "value_range": None}) for spec in manifest.inputs)
    write_manifest(manifest.model_copy(update={"inputs": inputs}), artifact)
    return artifact


def test_an_older_manifest_still_serves_good_requests(older_artifact):
    feed = tokens(2, 5, seed=40)
    status, body = answer(build_pipeline(older_artifact), feed)
    assert status == 200, body
    np.testing.assert_allclose(pooled(body), onnxruntime_says(older_artifact, feed), rtol=1e-6)


def test_an_older_manifest_gets_nothing_extra_checked(older_artifact):
    manifest = read_manifest(older_artifact)
    feed = {IDS: np.full((1, 7), 99999, dtype=np.int64), MASK: tokens(1, 9, seed=41)[MASK]}
    decoded = decode_inputs(parse_request(request_body(feed)[0]), manifest)
    assert {name: array.shape for name, array in decoded.items()} == {IDS: (1, 7), MASK: (1, 9)}
    rows_differ = {IDS: tokens(2, 5, seed=42)[IDS], MASK: tokens(3, 5, seed=43)[MASK]}
    with pytest.raises(ProtocolError, match=r"expected the same batch size \(first dimension\) for all, got \[2, 3\]"):
        decode_inputs(parse_request(request_body(rows_differ)[0]), manifest)  # the check every manifest had


def test_an_axis_named_twice_in_one_input_must_agree_with_itself():
    square = TensorSpec(name="adjacency", datatype="FP32", shape=(-1, -1), dim_names=("nodes", "nodes"))
    assert shared_axis_problem({"adjacency": [3, 3]}, {"adjacency": square}) is None
    assert shared_axis_problem({"adjacency": [3, 4]}, {"adjacency": square}) == (
        "input 'adjacency': axis 'nodes' must have the same size, got 3 and 4")
