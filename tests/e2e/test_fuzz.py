"""Fuzzing and properties against the real server: no 5xx for anything the schema allows,
and a cached answer equals a freshly computed one."""

from __future__ import annotations

import json
import urllib.request

import hypothesis.extra.numpy as hnp
import numpy as np
import onnxruntime as ort
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st

from optimize.manifest import read_manifest
from tests.e2e.test_server import infer_body, post_all

MODEL_PREFIX = "/v2/models/digits"


def api_schema(server, prefix: str):
    with urllib.request.urlopen(f"{server.url}{prefix}/openapi.json", timeout=10) as response:
        return schemathesis.openapi.from_dict(json.loads(response.read()))


@pytest.mark.parametrize("prefix", [MODEL_PREFIX, ""], ids=["model app", "root app"])
def test_no_input_the_schema_allows_makes_a_5xx(server, prefix):
    operations = [result.ok() for result in api_schema(server, prefix).get_all_operations()]
    assert operations
    if prefix:
        assert any(op.method.upper() == "POST" and op.path.endswith("/infer") for op in operations)
    for operation in operations:

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call(base_url=f"{server.url}{prefix}", timeout=30)
            assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:500])
            if response.status_code >= 400:
                assert "error" in response.json(), response.text[:500]

        check()


rows = hnp.arrays(np.float32, (1, 64), elements=st.floats(0, 1, width=32))


@pytest.fixture(scope="module")
def fresh(digits_artifact):
    session = ort.InferenceSession(str(digits_artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    deviation = read_manifest(digits_artifact).batch_deviation
    return lambda row: session.run(None, {"input": row})[0], deviation * 1.5 + 1e-5


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(row=rows)
def test_a_cached_answer_equals_a_freshly_computed_one(server, fresh, row):
    compute, tolerance = fresh
    body = infer_body(row)
    (first_status, first), = post_all(f"{server.url}{MODEL_PREFIX}/infer", [body])
    (second_status, second), = post_all(f"{server.url}{MODEL_PREFIX}/infer", [body])  # a cache hit, or coalesced
    assert first_status == second_status == 200
    assert first["outputs"] == second["outputs"]
    served = np.array(second["outputs"][0]["data"], dtype=np.float32).reshape(1, 10)
    np.testing.assert_allclose(served, compute(row), atol=tolerance)


def test_an_answer_alone_matches_the_same_input_inside_a_full_batch(server, fresh):
    """Batch invariance within the deviation the manifest states (the cache would freeze either)."""
    compute, tolerance = fresh
    others = np.random.default_rng(7).random((31, 64), dtype=np.float32)
    for seed in range(5):
        row = np.random.default_rng(100 + seed).random((1, 64), dtype=np.float32)
        (status_alone, alone), (status_batch, batch) = post_all(
            f"{server.url}{MODEL_PREFIX}/infer", [infer_body(row), infer_body(np.concatenate([row, others]))],
            concurrency=1,
        )
        assert status_alone == status_batch == 200
        alone_logits = np.array(alone["outputs"][0]["data"]).reshape(1, 10)
        batch_logits = np.array(batch["outputs"][0]["data"]).reshape(32, 10)[:1]
        np.testing.assert_allclose(alone_logits, batch_logits, atol=tolerance)
        assert alone_logits.argmax() == batch_logits.argmax()
