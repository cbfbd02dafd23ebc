"""The Redis tier through the real server: replicas share results, two artifacts never share entries, an
entry that does not fit is a counted miss, and Redis going away costs no errors."""

import shutil
import time

import numpy as np
import pytest
import redis

from optimize.manifest import read_manifest, write_manifest
from optiserve.local_server import start_server, stop_server
from serve.pipeline.cache import answer_scope, cache_key
from serve.runtimes.model import load_model
from serve.pipeline.shared_cache import PREFIX, encode_result
from tests.e2e.test_server import infer_body, post_all
from tests.redis_server import RedisProcess, needs_redis

pytestmark = needs_redis
URL = "/v2/models/digits/infer"


@pytest.fixture(scope="module")
def redis_process():
    process = RedisProcess().start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def renamed_artifact(digits_artifact, tmp_path_factory):
    """The digits artifact under another name: the same model.onnx, so the same sha256 in its manifest."""
    renamed = tmp_path_factory.mktemp("renamed") / "digits-b"
    shutil.copytree(digits_artifact, renamed)
    write_manifest(read_manifest(digits_artifact).model_copy(update={"name": "digits-b"}), renamed)
    return renamed


@pytest.fixture(scope="module")
def shared_server(digits_artifact, renamed_artifact, redis_process, tmp_path_factory):
    log = tmp_path_factory.mktemp("shared") / "server.log"
    running = start_server([digits_artifact, renamed_artifact], log, "--replicas", "2",
                           env={"OPTISERVE_REDIS_URL": redis_process.url})
    yield running
    assert stop_server(running) == 0, log.read_text()[-3000:]


def test_a_result_computed_by_one_replica_is_served_by_the_other(shared_server):
    rows_before = shared_server.settled_total("ray_optiserve_inference_rows_total", model="digits")
    shared_before = shared_server.metric_total("ray_optiserve_cache_shared_hits_total", model="digits")
    body = infer_body(np.full((1, 64), 0.77, dtype=np.float32))
    first = post_all(f"{shared_server.url}{URL}", [body])
    time.sleep(0.3)  # the first replica writes to Redis after answering
    rest = post_all(f"{shared_server.url}{URL}", [body] * 9, concurrency=1)
    assert {status for status, _ in first + rest} == {200}
    assert len({str(answer["outputs"]) for _, answer in first + rest}) == 1
    shared_server.wait_for_metric("ray_optiserve_inference_rows_total", rows_before + 1, model="digits")
    rows = shared_server.settled_total("ray_optiserve_inference_rows_total", model="digits") - rows_before
    shared = shared_server.metric_total("ray_optiserve_cache_shared_hits_total", model="digits") - shared_before
    assert rows == 1, f"two replicas computed the same input {rows} times despite the shared tier"
    assert shared >= 1


def test_two_artifacts_sharing_a_model_file_do_not_share_entries(shared_server):
    """digits-b is digits renamed, with the same model.onnx: its answers come from its own replicas, never from
    digits' Redis entries (in general such artifacts differ in what they answer: tokenizer, max_length...)."""
    body = infer_body(np.full((1, 64), 0.61, dtype=np.float32))
    assert post_all(f"{shared_server.url}{URL}", [body])[0][0] == 200
    time.sleep(0.3)  # digits' replica writes to Redis after answering
    rows_before = shared_server.settled_total("ray_optiserve_inference_rows_total", model="digits-b")
    hits_before = shared_server.metric_total("ray_optiserve_cache_shared_hits_total", model="digits-b")
    assert post_all(f"{shared_server.url}/v2/models/digits-b/infer", [body])[0][0] == 200
    assert shared_server.wait_for_metric("ray_optiserve_inference_rows_total", rows_before + 1,
                                         model="digits-b") == rows_before + 1
    assert shared_server.metric_total("ray_optiserve_cache_shared_hits_total", model="digits-b") == hits_before


def test_a_redis_entry_that_does_not_fit_is_a_counted_miss_never_an_answer(shared_server, redis_process,
                                                                           digits_artifact):
    """An entry under the very key this request gets, with the wrong shape: the replica computes the answer
    (200, the model's own numbers) and counts the entry as rejected."""
    row = np.full((1, 64), 0.37, dtype=np.float32)
    manifest = read_manifest(digits_artifact)
    key = cache_key(answer_scope(manifest, "CPUExecutionProvider"), {"input": row}, ["logits"])
    client = redis.Redis.from_url(redis_process.url)
    client.set(PREFIX + key, encode_result({"logits": np.full((1, 3), 7.0, dtype=np.float32)}))
    client.close()
    rejected_before = shared_server.metric_total("ray_optiserve_cache_shared_rejected_total", model="digits")
    [(status, answer)] = post_all(f"{shared_server.url}{URL}", [infer_body(row)])
    assert status == 200, answer
    expected = load_model(digits_artifact).run({"input": row})["logits"]
    np.testing.assert_allclose(np.array(answer["outputs"][0]["data"]).reshape(1, 10), expected, rtol=1e-5)
    assert shared_server.wait_for_metric("ray_optiserve_cache_shared_rejected_total", rejected_before + 1,
                                         model="digits") == rejected_before + 1


def test_redis_going_away_mid_traffic_causes_no_errors(shared_server, redis_process):
    rng = np.random.default_rng(11)
    before = [infer_body(rng.random((1, 64), dtype=np.float32)) for _ in range(20)]
    assert {s for s, _ in post_all(f"{shared_server.url}{URL}", before, concurrency=8)} == {200}
    redis_process.stop()
    during = [infer_body(rng.random((1, 64), dtype=np.float32)) for _ in range(60)]
    answers = post_all(f"{shared_server.url}{URL}", during, concurrency=8)
    assert [s for s, _ in answers] == [200] * 60
    assert shared_server.wait_for_metric("ray_optiserve_cache_shared_errors_total", 1, model="digits") >= 1
    redis_process.start()
    after = [infer_body(rng.random((1, 64), dtype=np.float32)) for _ in range(20)]
    assert {s for s, _ in post_all(f"{shared_server.url}{URL}", after, concurrency=8)} == {200}
