"""A model with two free dimensions beyond the batch: shapes that hide a huge count or a 0 past the first
dimension are client errors, never 500s. In-process InferencePipeline with the real model (no Ray)."""

import asyncio
import json

import numpy as np
import pytest

from serve.settings import ServeSettings
from tests.serve.pipeline.test_inference import build_pipeline


@pytest.fixture(scope="module")
def server(two_dynamic_dims_artifact):
    return build_pipeline(two_dynamic_dims_artifact, ServeSettings(max_elements=1 << 20))


def _answer(server, shape, data) -> tuple[int, dict]:
    body = json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": data}]}).encode()

    async def read_body(max_bytes: int) -> bytes:
        return body

    reply = asyncio.run(server.answer_inference({}, read_body, None))
    return reply.status, json.loads(reply.body)


def test_rows_of_any_two_free_dimensions_are_summed(server):
    for shape in ([1, 2, 3], [2, 5, 1], [3, 1, 7]):
        values = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        status, answer = _answer(server, shape, values.ravel().tolist())
        assert status == 200, answer
        assert answer["outputs"][0]["data"] == values.sum(axis=(1, 2)).tolist()


@pytest.mark.parametrize("shape, status, says", [
    ([1, 0, 10**30], 400, "expected shape [-1, -1, -1] (-1: any size >= 1), got [1, 0, "),  # 0 elements, then reshape
    ([1, 2, 0], 400, "any size >= 1"),
    ([1, 10**30, 1], 413, "elements, the limit per request"),
    ([1, 2048, 1024], 413, "more than 1048576 elements"),
    ([1, -1, 4], 400, "expected shape"),
])
def test_shapes_that_hide_their_size_past_the_batch_are_client_errors(server, shape, status, says):
    got, answer = _answer(server, shape, [])
    assert (got, says in answer["error"]) == (status, True), answer
