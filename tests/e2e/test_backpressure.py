"""Back-pressure and deadlines through the real server: 503 + Retry-After when the queue is full,
504 when a deadline passes; every request gets exactly one answer."""

import json
from collections import Counter

import numpy as np
import pytest

from optiserve.local_server import start_server, stop_server
from tests.e2e.test_server import infer_body, post_all, post_all_with_headers
from tests.serve.http.test_ingress_stamp import stamped


@pytest.fixture(scope="module")
def small_queue_server(digits_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("backpressure") / "server.log"
    running = start_server([digits_artifact], log, "--max-batch-size", "1", "--max-queue-size", "1",
                           "--cache-max-bytes", "0")
    yield running
    assert stop_server(running) == 0, log.read_text()[-3000:]


def test_a_full_queue_answers_503_with_retry_after_and_serves_the_rest(small_queue_server):
    rows = np.random.default_rng(0).random((300, 64), dtype=np.float32)
    bodies = [infer_body(rows[i : i + 1], request_id=str(i)) for i in range(len(rows))]
    answers = post_all_with_headers(f"{small_queue_server.url}/v2/models/digits/infer", bodies, 64)
    statuses = Counter(status for status, _, _ in answers)
    assert len(answers) == 300 and set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0, f"64 clients against a queue of 1 never saw back-pressure: {statuses}"
    assert statuses[200] > 0
    for status, headers, answer in answers:
        if status == 503:
            assert {k.lower(): v for k, v in headers.items()}.get("retry-after") == "1"
            # the batcher's queue (JSON), or Ray's own per-replica queue limit, before the handler (text)
            assert "server busy" in answer.get("error", "") or "dropped due to backpressure" in answer.get("text", "")
        else:
            assert answer["outputs"][0]["shape"] == [1, 10]


def _flood_a_fresh_server(artifact, tmp_path, *flags: str, env: dict[str, str] | None = None) -> list:
    """200 one-row requests from 48 clients at once against a new server that takes 2 at a time per replica."""
    server = start_server([artifact], tmp_path / "server.log", "--max-ongoing-requests", "2", "--max-batch-size", "1",
                          "--cache-max-bytes", "0", *flags, env=env)
    try:
        rows = np.random.default_rng(1).random((200, 64), dtype=np.float32)
        return post_all_with_headers(f"{server.url}/v2/models/digits/infer",
                                     [infer_body(rows[i : i + 1]) for i in range(len(rows))], 48)
    finally:
        stop_server(server)


def test_requests_beyond_the_ingress_queue_are_refused_by_haproxy_in_json(digits_artifact, tmp_path):
    """Admission at the ingress (serve/on_ray/ingress.py): 2 in flight per replica, 1 queued, the rest refused by
    HAProxy itself with the reject status, Retry-After and a JSON error, without reaching the replica. Ray's own
    per-replica queue is made roomy (8) so that every refusal here is the ingress's."""
    answers = _flood_a_fresh_server(digits_artifact, tmp_path, "--ingress-queue-per-replica", "1",
                                    "--reject-status", "429", "--max-queued-requests", "8")
    statuses = Counter(status for status, _, _ in answers)
    assert len(answers) == 200 and set(statuses) <= {200, 429} and statuses[200] > 0, statuses
    refused = [(headers, answer) for status, headers, answer in answers if status == 429]
    assert refused, f"48 clients against 2 in flight + 1 queued were never refused: {statuses}"
    for headers, answer in refused:
        assert {k.lower(): v for k, v in headers.items()}.get("retry-after") == "1"
        assert "queued at the ingress" in answer["error"], answer


def test_requests_beyond_the_replica_queue_are_refused_before_the_handler(digits_artifact, tmp_path):
    """max_queued_requests: Ray answers at once, so overload cannot build an unbounded queue. Ingress admission
    is off here; with it, the replica never holds more than max_ongoing_requests (the test above)."""
    answers = _flood_a_fresh_server(digits_artifact, tmp_path, "--max-queued-requests", "1",
                                    env={"OPTISERVE_INGRESS_ADMISSION": "false"})
    statuses = Counter(status for status, _, _ in answers)
    assert len(answers) == 200 and set(statuses) <= {200, 503} and statuses[200] > 0, statuses
    assert any("dropped due to backpressure" in answer.get("text", "") for _, _, answer in answers), statuses


def test_a_request_past_its_deadline_gets_504(small_queue_server):
    body = infer_body(np.zeros((1, 64), dtype=np.float32))
    body["parameters"] = {"timeout_ms": 0.001}
    ((status, answer),) = post_all(f"{small_queue_server.url}/v2/models/digits/infer", [body])
    assert status == 504 and "deadline passed" in answer["error"]


def test_a_clients_own_arrival_stamp_is_replaced_by_the_ingress(small_queue_server):
    """Deadlines count from when HAProxy received a request; a client claiming it arrived 5 s ago is not believed."""
    body = infer_body(np.full((1, 64), 0.75, dtype=np.float32))
    body["parameters"] = {"timeout_ms": 2000}
    forged = stamped(5.0)
    ((status, answer),) = post_all(f"{small_queue_server.url}/v2/models/digits/infer", [body], headers=forged)
    assert status == 200 and answer["outputs"][0]["shape"] == [1, 10], answer


@pytest.mark.parametrize("timeout", [0, -5, "soon", True, 10**9])
def test_a_bad_timeout_parameter_is_a_400(small_queue_server, timeout):
    body = infer_body(np.zeros((1, 64), dtype=np.float32))
    body["parameters"] = {"timeout_ms": timeout}
    ((status, answer),) = post_all(f"{small_queue_server.url}/v2/models/digits/infer", [json.dumps(body).encode()])
    assert status == 400 and "parameters.timeout_ms: expected a number of milliseconds" in answer["error"]
