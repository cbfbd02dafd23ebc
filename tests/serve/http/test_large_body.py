"""Bodies over LARGE_BODY_BYTES take the lazy parse (serve.http.large_body): same answers and errors as small ones,
and shapes are checked before any value is converted."""

import json

import numpy as np
import pytest

from optimize.manifest import TensorSpec
from serve.http.large_body import LARGE_BODY_BYTES
from serve.http.protocol import ProtocolError, decode_inputs, parse_request
from tests.serve.http.test_protocol import MANIFEST

INT_MANIFEST = MANIFEST.model_copy(update={"inputs": (TensorSpec(name="input", datatype="INT64", shape=(-1, 4)),)})
PADDING = {"pad": "x" * LARGE_BODY_BYTES}  # a request parameter that pushes any body over the threshold


def decode(tensor: dict, manifest=MANIFEST, large: bool = True):
    request = {"inputs": [{"name": "input", "datatype": "FP32", **tensor}]}
    if large:
        request["parameters"] = PADDING
    raw = json.dumps(request).encode()
    assert (len(raw) > LARGE_BODY_BYTES) == large
    return decode_inputs(parse_request(raw), manifest)["input"]


@pytest.mark.parametrize("tensor, manifest", [
    ({"shape": [3, 4], "data": [0.1 * i for i in range(12)]}, MANIFEST),
    ({"shape": [3, 4], "data": [[0.5, 1, 2, 3e-7]] * 3}, MANIFEST),
    ({"shape": [2, 4], "data": [1, 2, 3, 4, 5, 6, 7, 8]}, MANIFEST),
    ({"shape": [2, 4], "datatype": "INT64", "data": [2**62, -1, 0, 7] * 2}, INT_MANIFEST),
    ({"shape": [1, 4], "datatype": "INT64", "data": [True, False, True, 1]}, INT_MANIFEST),
])
def test_a_large_body_decodes_exactly_as_a_small_one(tensor, manifest):
    large, small = decode(tensor, manifest), decode(tensor, manifest, large=False)
    assert large.dtype == small.dtype and large.shape == small.shape
    np.testing.assert_array_equal(large, small)


@pytest.mark.parametrize("tensor, manifest", [
    ({"shape": [1, 4], "data": [1, 2, 3]}, MANIFEST),
    ({"shape": [2, 4], "data": [[1, 2, 3, 4], [5]]}, MANIFEST),
    ({"shape": [1, 4], "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}, MANIFEST),
    ({"shape": [1, 4], "data": ["a", "b", "c", "d"]}, MANIFEST),
    ({"shape": [1, 4], "data": [1, 2, 3, 1e300]}, MANIFEST),
    ({"shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4.5]}, INT_MANIFEST),
    ({"shape": [1, 4], "data": None}, MANIFEST),
    ({"shape": [1, 4], "data": 5}, MANIFEST),
    ({"shape": [1, 4]}, MANIFEST),
])
def test_a_large_body_is_refused_with_the_small_ones_message(tensor, manifest):
    errors = []
    for large in (True, False):
        with pytest.raises(ProtocolError) as caught:
            decode(tensor, manifest, large)
        errors.append((caught.value.status, caught.value.message))
    assert errors[0] == errors[1] and errors[0][0] == 400


@pytest.mark.parametrize("raw, message", [
    (b"{" + b" " * LARGE_BODY_BYTES + b"not json", "not valid JSON"),
    (b"[" + b"1," * LARGE_BODY_BYTES + b"1]", "expected {\"inputs\""),
    (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "recursion limit"),
    (json.dumps({"inputs": "x" * LARGE_BODY_BYTES}).encode(), "inputs"),
    (json.dumps({"inputs": [{"name": "input", "shape": "x" * LARGE_BODY_BYTES, "datatype": "FP32",
                             "data": []}]}).encode(), "inputs.0.shape"),
])
def test_a_large_body_that_is_not_an_inference_request_is_a_400(raw, message):
    with pytest.raises(ProtocolError) as caught:
        decode_inputs(parse_request(raw), MANIFEST)
    assert caught.value.status == 400 and message in caught.value.message


def test_a_million_values_for_one_row_are_refused_by_their_count_before_conversion():
    raw = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                  "data": [0.5] * 1_000_000}]}).encode()
    request = parse_request(raw)
    assert type(request.inputs[0].data).__name__ == "Array"  # still on simdjson's tape: no Python floats made
    with pytest.raises(ProtocolError, match=r"shape \[1, 4\] needs 4 values, got 1000000"):
        decode_inputs(request, MANIFEST)
