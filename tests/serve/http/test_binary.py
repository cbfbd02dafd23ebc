import json

import numpy as np
import pytest

from serve.http.binary import binary_inputs, binary_outputs, split_body
from serve.http.protocol import ProtocolError, decode_inputs, encode_response, parse_request
from tests.serve.http.test_protocol import MANIFEST


def binary_request(array: np.ndarray, extra: bytes = b"", outputs=None, parameters=None) -> tuple[bytes, str]:
    header = {"inputs": [{"name": "input", "shape": list(array.shape), "datatype": "FP32",
                          "parameters": {"binary_data_size": array.nbytes}}]}
    if outputs is not None:
        header["outputs"] = outputs
    if parameters is not None:
        header["parameters"] = parameters
    encoded = json.dumps(header).encode()
    return encoded + array.astype("<f4").tobytes() + extra, str(len(encoded))


def decode(body: bytes, header_length: str):
    header, tail = split_body(body, header_length)
    request = parse_request(header)
    return request, decode_inputs(request, MANIFEST, binary_inputs(request, tail))


def test_binary_inputs_decode_to_the_same_array():
    array = np.arange(8, dtype=np.float32).reshape(2, 4)
    _, inputs = decode(*binary_request(array))
    np.testing.assert_array_equal(inputs["input"], array)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda body, n: (body + b"\0", n), "expected 32 bytes of binary input data"),
        (lambda body, n: (body[:-4], n), "does not fit"),
        (lambda body, n: (body, "abc"), "Inference-Header-Content-Length: expected"),
        (lambda body, n: (body, str(10**9)), "at most the body's"),
        (lambda body, n: (body, "9" * 5000), "as ASCII digits"),  # int() refuses over 4,300 digits
        (lambda body, n: (body, "\u00b2"), "as ASCII digits"),  # '²'.isdigit() is True; int('²') raises
        (lambda body, n: (body, "\u0664\u0662"), "as ASCII digits"),  # Arabic-Indic digits: int() would take them
        (lambda body, n: (body, "-1"), "as ASCII digits"),
    ],
)
def test_binary_framing_errors_are_400s_naming_what_was_expected(mutate, message):
    body, header_length = binary_request(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ProtocolError) as caught:
        decode(*mutate(body, header_length))
    assert caught.value.status == 400 and message in caught.value.message


def test_a_binary_size_that_does_not_match_the_shape_is_a_400():
    array = np.zeros((2, 4), dtype=np.float32)
    body, header_length = binary_request(array)
    header = json.loads(body[: int(header_length)])
    header["inputs"][0]["shape"] = [1, 4]
    encoded = json.dumps(header).encode()
    with pytest.raises(ProtocolError, match="needs 16 binary bytes, got 32"):
        decode(encoded + body[int(header_length):], str(len(encoded)))


def test_outputs_come_back_binary_when_asked_per_output_or_for_all():
    array = np.zeros((1, 4), dtype=np.float32)
    per_output, _ = decode(*binary_request(array, outputs=[{"name": "logits", "parameters": {"binary_data": True}}]))
    for_all, _ = decode(*binary_request(array, parameters={"binary_data_output": True}))
    plain, _ = decode(*binary_request(array))
    assert binary_outputs(per_output, ("logits",)) == binary_outputs(for_all, ("logits",)) == {"logits"}
    assert binary_outputs(plain, ("logits",)) == frozenset()


def test_a_binary_response_is_a_json_header_then_raw_little_endian_bytes():
    logits = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, header_length = encode_response(MANIFEST, None, {"logits": logits}, frozenset({"logits"}))
    header = json.loads(body[:header_length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 24 and "data" not in header["outputs"][0]
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], "<f4").reshape(2, 3), logits)
