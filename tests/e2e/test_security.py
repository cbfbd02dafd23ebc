"""Bearer-token auth and request limits through the real server."""

import json

import aiohttp
import asyncio
import numpy as np
import pytest

from optiserve.local_server import start_server, stop_server
from tests.e2e.test_server import infer_body

TOKEN = "s3cret-token"
BODY_LIMIT = 200_000


@pytest.fixture(scope="module")
def guarded_server(digits_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("security") / "server.log"
    running = start_server([digits_artifact], log, env={
        "OPTISERVE_AUTH_TOKEN": TOKEN, "OPTISERVE_MAX_BODY_BYTES": str(BODY_LIMIT), "OPTISERVE_MAX_ELEMENTS": "6400",
    })
    yield running
    assert stop_server(running) == 0, log.read_text()[-3000:]


def request(method, url, body=None, headers=None):
    async def send():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.request(method, url, data=body, headers=headers or {}) as response:
                return response.status, dict(response.headers), await response.json(content_type=None)
    return asyncio.run(send())


GOOD = json.dumps(infer_body(np.zeros((2, 64), dtype=np.float32))).encode()
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_inference_needs_the_token(guarded_server):
    status, headers, answer = request("POST", f"{guarded_server.url}/v2/models/digits/infer", GOOD)
    assert status == 401 and "Bearer" in headers.get("WWW-Authenticate", "") and "Authorization" in answer["error"]
    status, _, _ = request("POST", f"{guarded_server.url}/v2/models/digits/infer", GOOD,
                           {"Authorization": "Bearer wrong"})
    assert status == 401
    status, _, answer = request("POST", f"{guarded_server.url}/v2/models/digits/infer", GOOD, AUTH)
    assert status == 200 and answer["outputs"][0]["shape"] == [2, 10]


def test_model_metadata_needs_the_token_health_does_not(guarded_server):
    assert request("GET", f"{guarded_server.url}/v2/models/digits")[0] == 401
    assert request("GET", f"{guarded_server.url}/v2/models/digits", headers=AUTH)[0] == 200
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/digits/ready"):
        assert request("GET", f"{guarded_server.url}{path}")[0] == 200, path


def test_a_body_over_the_limit_is_413(guarded_server):
    huge = b'{"inputs": [' + b" " * (BODY_LIMIT + 10) + b"]}"
    status, _, answer = request("POST", f"{guarded_server.url}/v2/models/digits/infer", huge, AUTH)
    assert status == 413 and f"limit of {BODY_LIMIT} bytes" in answer["error"]


def test_a_declared_shape_over_the_element_limit_is_413(guarded_server):
    body = json.dumps({"inputs": [{"name": "input", "shape": [1_000_000, 64], "datatype": "FP32", "data": [0]}]})
    status, _, answer = request("POST", f"{guarded_server.url}/v2/models/digits/infer", body.encode(), AUTH)
    assert status == 413 and "6400 elements" in answer["error"]


def test_the_server_keeps_serving_after_refusals(guarded_server):
    status, _, _ = request("POST", f"{guarded_server.url}/v2/models/digits/infer", GOOD, AUTH)
    assert status == 200
