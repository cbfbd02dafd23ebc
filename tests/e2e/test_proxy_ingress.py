"""The selectable alternative ingress (Ray Serve's Python proxy) serves the same API."""

import numpy as np
import pytest

from optiserve.local_server import start_server, stop_server
from tests.e2e.test_server import infer_body, post_all


@pytest.fixture(scope="module")
def proxy_server(digits_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("proxy") / "server.log"
    running = start_server([digits_artifact], log, "--ingress", "proxy")
    yield running
    assert stop_server(running) == 0, log.read_text()[-3000:]


def test_proxy_ingress_answers_predictions_and_client_errors(proxy_server):
    rows = np.full((2, 64), 0.5, dtype=np.float32)
    (status, answer), (bad_status, bad) = post_all(
        f"{proxy_server.url}/v2/models/digits/infer", [infer_body(rows), b"{broken"], concurrency=2
    )
    assert status == 200 and answer["outputs"][0]["shape"] == [2, 10]
    assert bad_status == 400 and "not valid JSON" in bad["error"]
    ((missing_status, missing),) = post_all(f"{proxy_server.url}/v2/models/other/infer", [infer_body(rows)])
    assert missing_status == 404 and "unknown model 'other'" in missing["error"]
