"""Every case of the bad-input corpus (loadtests/corpus.py), answered by a digits InferencePipeline in-process: the
same checks the load test makes under traffic, in seconds, so that a parser change that turns one into a 500
fails here first."""

import asyncio

import pytest

from loadtests.corpus import CORPUS, check_answer
from serve.http.guards import read_body
from tests.serve.pipeline.test_inference import build_pipeline


@pytest.fixture(scope="module")
def server(digits_artifact):
    return build_pipeline(digits_artifact)


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_each_malformed_request_gets_its_4xx_with_a_message(server, case):
    body = case.body()
    headers = {name.lower(): value for name, value in case.headers.items()}

    async def chunks():
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    async def read(max_bytes: int) -> bytes:  # as the replica's HTTP server reads: Content-Length first
        return await read_body(str(len(body)), chunks(), max_bytes)

    reply = asyncio.run(server.answer_inference(headers, read, None))
    assert check_answer(case, reply.status, reply.body) is None
