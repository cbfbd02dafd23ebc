"""End to end: the real server on loopback, real HTTP, real onnxruntime, real Ray Serve."""

from __future__ import annotations

import asyncio
import json
import os

import aiohttp
import numpy as np
import onnxruntime as ort
import psutil
import pytest

from optimize.demos.digits import load_split
from optimize.manifest import read_manifest

MODEL_URL = "/v2/models/digits"


def infer_body(rows: np.ndarray, request_id: str | None = None) -> dict:
    body = {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}
    if request_id is not None:
        body["id"] = request_id
    return body


async def _post_all(url: str, bodies: list, concurrency: int, headers: dict | None) -> list[tuple[int, dict]]:
    limit = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), headers=headers) as session:
        async def post(body):
            async with limit:
                kwargs = {"data": body} if isinstance(body, (bytes, str)) else {"json": body}
                async with session.post(url, **kwargs) as response:
                    return response.status, await response.json(content_type=None)
        return await asyncio.gather(*(post(b) for b in bodies))


def post_all(url, bodies, concurrency=16, headers=None):
    return asyncio.run(_post_all(url, bodies, concurrency, headers))


def post_all_with_headers(url, bodies, concurrency=16) -> list[tuple[int, dict, dict]]:
    async def run():
        limit = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            async def post(body):
                async with limit:
                    async with session.post(url, json=body) as response:
                        text = await response.text()
                        try:
                            return response.status, dict(response.headers), json.loads(text)
                        except ValueError:  # Ray's own back-pressure answer is plain text
                            return response.status, dict(response.headers), {"text": text}
            return await asyncio.gather(*(post(b) for b in bodies))
    return asyncio.run(run())


def get(url):
    async def fetch():
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                return response.status, await response.json(content_type=None)
    return asyncio.run(fetch())


@pytest.fixture(scope="module")
def held_out():
    _, _, test_x, test_y = load_split()
    return test_x, test_y


@pytest.fixture(scope="module")
def direct_session(digits_artifact):
    return ort.InferenceSession(str(digits_artifact / "model.onnx"), providers=["CPUExecutionProvider"])


def test_health_and_metadata_routes(server):
    assert get(f"{server.url}/v2/health/live") == (200, {"live": True})
    assert get(f"{server.url}/v2/health/ready") == (200, {"ready": True})
    status, meta = get(f"{server.url}/v2")
    assert status == 200 and meta["name"] == "optiserve" and meta["extensions"] == ["binary_tensor_data"]
    status, model = get(f"{server.url}{MODEL_URL}")
    assert status == 200
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert model["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert model["platform"] == "onnxruntime_onnx" and model["execution_provider"] == "CPUExecutionProvider"
    assert get(f"{server.url}{MODEL_URL}/ready") == (200, {"name": "digits", "ready": True})
    assert get(f"{server.url}{MODEL_URL}/versions/1")[0] == 200


def test_model_requests_are_answered_by_the_replicas_own_server_and_the_root_app_by_rays(server, held_out):
    """Ray's replica server (uvicorn) tags each answer with an x-request-id; the replica's own server does not."""
    async def headers(method: str, url: str, body: dict | None = None) -> dict:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, url, json=body) as response:
                await response.read()
                assert response.status == 200
                return {name.lower(): value for name, value in response.headers.items()}

    model = asyncio.run(headers("POST", f"{server.url}{MODEL_URL}/infer", infer_body(held_out[0][:1])))
    metadata = asyncio.run(headers("GET", f"{server.url}{MODEL_URL}"))
    root = asyncio.run(headers("GET", f"{server.url}/v2/health/live"))
    assert "x-request-id" not in model and "x-request-id" not in metadata and "date" in model
    assert "x-request-id" in root


def test_the_ingress_runs_at_normal_priority_and_the_replicas_at_rays(server):
    """Ray runs its workers (the replicas) at niceness 15 and HAProxy would inherit it; the server lowers
    HAProxy's to 0 (ServeSettings.ingress_niceness) where it may: as root, or with CAP_SYS_NICE."""
    tree = psutil.Process(server.process.pid).children(recursive=True)
    haproxy = [p for p in tree if p.name() == "haproxy"]
    replicas = [p for p in tree if "ServeReplica:digits" in p.name()]
    assert haproxy and len(replicas) == 2
    assert {p.nice() for p in replicas} == {15}, "Ray's worker niceness changed: revisit ingress_niceness"
    if os.geteuid() != 0:
        pytest.skip(f"not root (uid {os.geteuid()}): HAProxy may not be lowered below 15 here")
    assert {p.nice() for p in haproxy} == {0}


def tolerance(artifact) -> float:
    return read_manifest(artifact).batch_deviation * 1.5 + 1e-5


def test_concurrent_predictions_equal_direct_onnxruntime(server, held_out, direct_session, digits_artifact):
    inputs, labels = held_out
    bodies = [infer_body(inputs[i : i + 1], request_id=f"req-{i}") for i in range(len(inputs))]
    answers = post_all(f"{server.url}{MODEL_URL}/infer", bodies, concurrency=32)
    expected = direct_session.run(None, {"input": inputs})[0]
    served = np.array([answer["outputs"][0]["data"] for _, answer in answers], dtype=np.float32)
    assert all(status == 200 for status, _ in answers)
    assert [answer["id"] for _, answer in answers] == [f"req-{i}" for i in range(len(inputs))]
    # Dynamic int8 scales activations per batch, so a row may move with its neighbours by up
    # to the deviation the manifest states; fp32 states ~0.
    np.testing.assert_allclose(served, expected, atol=tolerance(digits_artifact))
    assert np.mean(served.argmax(axis=1) == expected.argmax(axis=1)) > 0.99
    assert np.mean(served.argmax(axis=1) == labels) > 0.9


def test_a_multi_row_request_is_answered_row_for_row(server, held_out, direct_session, digits_artifact):
    rows = held_out[0][:5]
    ((status, answer),) = post_all(f"{server.url}{MODEL_URL}/versions/1/infer", [infer_body(rows)])
    assert status == 200 and answer["outputs"][0]["shape"] == [5, 10]
    expected = direct_session.run(None, {"input": rows})[0]
    np.testing.assert_allclose(np.reshape(answer["outputs"][0]["data"], (5, 10)), expected, atol=tolerance(digits_artifact))


def test_batches_larger_than_one_form_under_concurrency(server, held_out):
    before_count = server.settled_total("ray_optiserve_batch_size_count", model="digits")
    before_ones = server.metric_total("ray_optiserve_batch_size_bucket", model="digits", le="1.0")
    before_rows = server.metric_total("ray_optiserve_inference_rows_total", model="digits")
    inputs = held_out[0]
    bodies = [infer_body(inputs[i % len(inputs) : i % len(inputs) + 1] + 0.001 * (i // len(inputs) + 1))
              for i in range(400)]
    assert all(status == 200 for status, _ in post_all(f"{server.url}{MODEL_URL}/infer", bodies, concurrency=64))
    server.wait_for_metric("ray_optiserve_inference_rows_total", before_rows + 400, model="digits")
    after_count = server.settled_total("ray_optiserve_batch_size_count", model="digits")
    rows = server.metric_total("ray_optiserve_inference_rows_total", model="digits") - before_rows
    after_ones = server.metric_total("ray_optiserve_batch_size_bucket", model="digits", le="1.0")
    multi_row_batches = (after_count - before_count) - (after_ones - before_ones)
    assert multi_row_batches > 0, "no batch of more than one row formed under 64 concurrent clients"
    assert rows == 400


def test_each_request_reports_its_wait_at_the_ingress(server, held_out):
    before = server.settled_total("ray_optiserve_ingress_wait_seconds_count", model="digits")
    inputs = held_out[0]
    answers = post_all(f"{server.url}{MODEL_URL}/infer", [infer_body(inputs[i : i + 1]) for i in range(20)])
    assert all(status == 200 for status, _ in answers)
    after = server.wait_for_metric("ray_optiserve_ingress_wait_seconds_count", before + 20, model="digits")
    assert after == before + 20
    assert server.metric_total("ray_optiserve_ingress_wait_seconds_bucket", model="digits", le="5.0") == after


def test_a_repeated_request_is_a_cache_hit(server, held_out):
    hits_before = server.settled_total("ray_optiserve_cache_hits_total", model="digits")
    misses_before = server.metric_total("ray_optiserve_cache_misses_total", model="digits")
    row = held_out[0][:1] + 0.5  # not sent by any other test
    # Different ids, same tensors: the id is not part of the key. Two replicas: at most one miss each.
    bodies = [infer_body(row, request_id=f"again-{i}") for i in range(10)]
    answers = post_all_with_headers(f"{server.url}{MODEL_URL}/infer", bodies, concurrency=1)
    assert len({json.dumps(a["outputs"]) for _, _, a in answers}) == 1
    sources = [{k.lower(): v for k, v in headers.items()}["x-optiserve-cache"] for _, headers, _ in answers]
    assert sources[0] == "miss" and sources.count("hit") >= 8
    server.wait_for_metric("ray_optiserve_cache_hits_total", hits_before + 8, model="digits")
    hits = server.settled_total("ray_optiserve_cache_hits_total", model="digits")
    misses = server.metric_total("ray_optiserve_cache_misses_total", model="digits")
    assert hits - hits_before >= 8 and 1 <= misses - misses_before <= 2


def test_identical_concurrent_requests_are_computed_once_per_replica(server):
    """Cache plus coalescing: 40 identical requests at once cost at most one model row per replica."""
    rows_before = server.settled_total("ray_optiserve_inference_rows_total", model="digits")
    coalesced_before = server.metric_total("ray_optiserve_coalesced_requests_total", model="digits")
    hits_before = server.metric_total("ray_optiserve_cache_hits_total", model="digits")
    body = infer_body(np.full((1, 64), 0.123, dtype=np.float32))
    answers = post_all(f"{server.url}{MODEL_URL}/infer", [body] * 40, concurrency=40)
    assert all(status == 200 for status, _ in answers)
    assert len({json.dumps(answer["outputs"]) for _, answer in answers}) == 1
    server.wait_for_metric("ray_optiserve_inference_rows_total", rows_before + 1, model="digits")
    rows = server.settled_total("ray_optiserve_inference_rows_total", model="digits") - rows_before
    coalesced = server.metric_total("ray_optiserve_coalesced_requests_total", model="digits") - coalesced_before
    hits = server.metric_total("ray_optiserve_cache_hits_total", model="digits") - hits_before
    assert 1 <= rows <= 2, f"{rows} rows computed for one distinct input on 2 replicas"
    assert rows + coalesced + hits == 40


def test_request_counts_add_up_across_replicas(server, held_out):
    """A scrape must show every replica's count, whichever replica answered."""
    before = server.settled_total("ray_optiserve_requests_total", model="digits", status="200")
    bodies = [infer_body(held_out[0][i : i + 1] - 0.25) for i in range(60)]
    assert all(status == 200 for status, _ in post_all(f"{server.url}{MODEL_URL}/infer", bodies, concurrency=8))
    server.wait_for_metric("ray_optiserve_requests_total", before + 60, model="digits", status="200")
    after = server.settled_total("ray_optiserve_requests_total", model="digits", status="200")
    assert after - before == 60
    workers = {s["WorkerId"] for s in server.series("ray_optiserve_requests_total") if s.get("model") == "digits"}
    assert len(workers) == 2, f"expected both replicas to report, saw {len(workers)}"


GOOD = infer_body(np.zeros((1, 64), dtype=np.float32))
BAD_REQUESTS = [
    ("malformed JSON", MODEL_URL + "/infer", b'{"inputs": [', 400, "not valid JSON"),
    ("unknown model", "/v2/models/nope/infer", json.dumps(GOOD), 404, "unknown model 'nope'; available models: digits"),
    ("unknown version", MODEL_URL + "/versions/7/infer", json.dumps(GOOD), 404, "no version '7'"),
    ("wrong input name", MODEL_URL + "/infer",
     json.dumps({"inputs": [{**GOOD["inputs"][0], "name": "pixels"}]}), 400, "expected inputs: input"),
    ("wrong shape", MODEL_URL + "/infer",
     json.dumps({"inputs": [{**GOOD["inputs"][0], "shape": [1, 65]}]}), 400, "expected shape [-1, 64]"),
    ("wrong datatype", MODEL_URL + "/infer",
     json.dumps({"inputs": [{**GOOD["inputs"][0], "datatype": "INT64"}]}), 400, "expected datatype FP32, got INT64"),
    ("wrong data length", MODEL_URL + "/infer",
     json.dumps({"inputs": [{**GOOD["inputs"][0], "data": [0.0] * 63}]}), 400, "needs 64 values, got 63"),
    ("strings as data", MODEL_URL + "/infer",
     json.dumps({"inputs": [{**GOOD["inputs"][0], "data": ["x"] * 64}]}), 400, "expected FP32 numbers"),
    ("no inputs", MODEL_URL + "/infer", json.dumps({"inputs": []}), 400, "inputs"),
]


@pytest.mark.parametrize("case, path, body, status, message", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_gets_a_4xx_naming_what_was_expected(server, case, path, body, status, message):
    ((got_status, answer),) = post_all(f"{server.url}{path}", [body.encode() if isinstance(body, str) else body])
    assert got_status == status, answer
    assert message in answer["error"]


def test_bad_input_mixed_with_good_traffic_leaves_the_good_unharmed(server):
    before_400 = server.settled_total("ray_optiserve_requests_total", model="digits", status="400")
    bad = [b for _, p, b, s, _ in BAD_REQUESTS if p.startswith(MODEL_URL + "/infer") and s == 400]
    bodies = [GOOD if i % 2 else bad[i % len(bad)] for i in range(40)]
    bodies = [b.encode() if isinstance(b, str) else b for b in bodies]
    answers = post_all(f"{server.url}{MODEL_URL}/infer", bodies, concurrency=16)
    assert [s for s, _ in answers[1::2]] == [200] * 20
    assert all(s == 400 and "error" in a for s, a in answers[0::2])
    server.wait_for_metric("ray_optiserve_requests_total", before_400 + 20, model="digits", status="400")
    assert server.settled_total("ray_optiserve_requests_total", model="digits", status="400") == before_400 + 20
