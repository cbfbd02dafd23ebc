"""A model repository through the real server: several models, several versions, newest by default."""

import numpy as np
import pytest

from optiserve.local_server import start_server, stop_server
from tests.e2e.test_server import get, infer_body, post_all
from tests.serve.test_repository import copy_as


@pytest.fixture(scope="module")
def repository_server(digits_artifact, tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    copy_as(digits_artifact, repository / "digits" / "1", version="1")
    copy_as(digits_artifact, repository / "digits" / "2", version="2")
    copy_as(digits_artifact, repository / "twin", name="twin")
    log = tmp_path_factory.mktemp("repository-log") / "server.log"
    running = start_server([repository], log)
    yield running
    assert stop_server(running) == 0, log.read_text()[-3000:]


def infer(server, path):
    ((status, answer),) = post_all(f"{server.url}{path}", [infer_body(np.zeros((1, 64), dtype=np.float32))])
    return status, answer


def test_the_newest_version_answers_by_default_and_each_version_by_path(repository_server):
    assert infer(repository_server, "/v2/models/digits/infer")[1]["model_version"] == "2"
    assert infer(repository_server, "/v2/models/digits/versions/2/infer")[1]["model_version"] == "2"
    assert infer(repository_server, "/v2/models/digits/versions/1/infer")[1]["model_version"] == "1"
    status, meta = get(f"{repository_server.url}/v2/models/digits")
    assert status == 200 and meta["versions"] == ["2", "1"]
    assert get(f"{repository_server.url}/v2/models/digits/versions/1/ready") == (200, {"name": "digits", "ready": True})


def test_every_model_in_the_repository_is_served(repository_server):
    status, answer = infer(repository_server, "/v2/models/twin/infer")
    assert status == 200 and answer["model_name"] == "twin"
    assert get(f"{repository_server.url}/v2/health/ready") == (200, {"ready": True})


def test_unknown_versions_and_models_list_what_is_served(repository_server):
    status, answer = infer(repository_server, "/v2/models/digits/versions/3/infer")
    assert status == 404 and "versions served: 2, 1" in answer["error"]
    status, answer = infer(repository_server, "/v2/models/nope/infer")
    assert status == 404 and "available models: digits, twin" in answer["error"]
