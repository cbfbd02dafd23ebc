"""The Redis tier through the real server: replicas share results, and Redis going away costs no errors."""

import time

import numpy as np
import pytest

from optiserve.local_server import start_server, stop_server
from tests.e2e.test_server import infer_body, post_all
from tests.redis_server import REDIS_SERVER, RedisProcess

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed (.ci/run installs it)")
URL = "/v2/models/digits/infer"


@pytest.fixture(scope="module")
def redis_process():
    process = RedisProcess().start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def shared_server(digits_artifact, redis_process, tmp_path_factory):
    log = tmp_path_factory.mktemp("shared") / "server.log"
    running = start_server([digits_artifact], log, "--replicas", "2", env={"OPTISERVE_REDIS_URL": redis_process.url})
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
