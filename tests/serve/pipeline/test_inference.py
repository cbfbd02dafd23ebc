"""InferencePipeline in-process (no Ray, no HTTP): deadlines count from when the ingress received the request;
replies are counted in the metrics; reconfigure changes the cache live."""

import asyncio
import json

import pytest

from serve.pipeline.inference import CACHE_HEADER, InferencePipeline
from serve.settings import RuntimeConfig, ServeSettings
from tests.serve.http.test_ingress_stamp import stamped


def build_pipeline(artifact, settings: ServeSettings = ServeSettings()) -> InferencePipeline:
    return InferencePipeline(artifact, settings)


def _answer(server, headers: dict[str, str], timeout_ms: float | None = None, pixel: float = 0.5):
    """(status, headers, JSON body) of one digits request for an image of `pixel` everywhere."""
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [pixel] * 64}]}
    if timeout_ms is not None:
        body["parameters"] = {"timeout_ms": timeout_ms}

    async def read_body(max_bytes: int) -> bytes:
        return json.dumps(body).encode()

    reply = asyncio.run(server.answer_inference(headers, read_body, None))
    return reply.status, reply.headers, json.loads(reply.body)


@pytest.fixture(scope="module")
def server(digits_artifact):
    return build_pipeline(digits_artifact)


def test_a_request_that_spent_its_deadline_at_the_ingress_gets_504_without_compute(server):
    status, _, answer = _answer(server, stamped(2.0), timeout_ms=1500, pixel=0.25)
    assert status == 504, answer
    assert "before the request reached the model's queue" in answer["error"], answer
    assert "ms after the server received it (time queued at the ingress counts)" in answer["error"], answer
    status, headers, _ = _answer(server, {}, pixel=0.25)  # not computed then, so not cached either
    assert status == 200 and headers[CACHE_HEADER] == "miss"


@pytest.mark.parametrize("seconds_ago", [
    None,  # no stamp (another ingress): counted from the replica
    1.0,  # waited 1 s of its 1.5 s
    60.0,  # beyond HAProxy's queue timeout: clocks that disagree, not a wait
])
def test_requests_within_their_deadline_are_answered(server, seconds_ago):
    status, _, answer = _answer(server, {} if seconds_ago is None else stamped(seconds_ago), timeout_ms=1500)
    assert status == 200 and answer["outputs"][0]["shape"] == [1, 10], answer


def test_without_optiserves_haproxy_rewrite_a_stamp_is_a_clients_and_is_ignored(digits_artifact):
    server = build_pipeline(digits_artifact, ServeSettings(ingress_admission=False))
    status, _, answer = _answer(server, stamped(2.0), timeout_ms=1500)
    assert status == 200 and answer["outputs"][0]["shape"] == [1, 10], answer


def test_each_reply_is_counted_by_status_and_where_the_answer_came_from(digits_artifact):
    pipeline = build_pipeline(digits_artifact)
    for pixel in (0.125, 0.125, 0.375):
        assert _answer(pipeline, {}, pixel=pixel)[0] == 200
    assert _answer(pipeline, {}, timeout_ms=-1)[0] == 400
    pipeline.metrics.flush()
    counted = pipeline.metrics_backend.value
    tags = {"model": pipeline.manifest.name, "version": pipeline.manifest.version}
    assert [counted("optiserve_requests", **tags, status=status) for status in ("200", "400")] == [3, 1]
    assert [counted("optiserve_cache_hits", **tags), counted("optiserve_cache_misses", **tags)] == [1, 2]
    assert counted("optiserve_request_latency_seconds_count", **tags, cache="hit") == 1
    assert counted("optiserve_inference_rows", **tags) == 2


def test_reconfigure_turns_the_cache_off_live(digits_artifact):
    pipeline = build_pipeline(digits_artifact)
    assert [_answer(pipeline, {}, pixel=0.625)[1][CACHE_HEADER] for _ in range(2)] == ["miss", "hit"]
    pipeline.reconfigure(RuntimeConfig.model_validate({**pipeline.config.model_dump(), "cache_max_bytes": 0}))
    assert _answer(pipeline, {}, pixel=0.625)[1][CACHE_HEADER] == "off"
