import json

import numpy as np
import orjson
import pytest

from optimize.manifest import Manifest, Measurement, TensorSpec, TextInput
from serve.http.protocol import ProtocolError, decode_inputs, encode_response, parse_request, requested_outputs

MEASURED = Measurement(accuracy=0.9, latency_ms={1: 0.1}, size_bytes=1)
MANIFEST = Manifest(
    name="digits", version="1", sha256="0" * 64,
    inputs=(TensorSpec(name="input", datatype="FP32", shape=(-1, 4)),),
    outputs=(TensorSpec(name="logits", datatype="FP32", shape=(-1, 3)),),
    metric="top1", steps=(), before=MEASURED, after=MEASURED, batch_deviation=0.0, machine="test",
    tool_versions={}, created_at="now",
)


def body(**tensor):
    tensor = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0, 1, 2, 3], **tensor}
    return json.dumps({"id": "r1", "inputs": [tensor]}).encode()


def decode(raw):
    return decode_inputs(parse_request(raw), MANIFEST)


def test_flat_and_nested_data_decode_to_the_declared_shape_and_dtype():
    flat = decode(body(shape=[2, 4], data=list(range(8))))["input"]
    nested = decode(body(shape=[2, 4], data=[[0, 1, 2, 3], [4, 5, 6, 7]]))["input"]
    assert flat.dtype == np.float32 and flat.shape == (2, 4)
    np.testing.assert_array_equal(flat, nested)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "expected {\"inputs\""),
        (b'{"inputs": []}', "inputs"),
        (body(name="pixels"), "input 'pixels': model 'digits' has no such input; expected inputs: input"),
        (body(datatype="INT32"), "input 'input': expected datatype FP32, got INT32"),
        (body(shape=[1, 5]), "expected shape [-1, 4]"),
        (body(shape=[4]), "expected shape [-1, 4]"),
        (body(shape=[0, 4], data=[]), "expected shape [-1, 4]"),
        (body(data=[1, 2, 3]), "shape [1, 4] needs 4 values, got 3"),
        (body(data=["a", "b", "c", "d"]), "expected FP32 numbers"),
        (body(shape=[2, 4], data=[[1, 2, 3, 4], [5]]), "evenly nested list of numbers"),
        (body(data=[[1, 2], [3, 4]]), "shape [1, 4] needs nested data with 1 lists at the top level, got 2"),
        (body(shape=[1, 0], data=[]), "expected shape [-1, 4]"),  # 0 is refused in every dimension
    ],
)
def test_bad_requests_are_400_with_a_message_naming_what_was_expected(raw, message):
    with pytest.raises(ProtocolError) as caught:
        decode(raw)
    assert caught.value.status == 400
    assert message in caught.value.message


def test_missing_and_duplicate_inputs_are_reported():
    duplicate = json.dumps({"inputs": [json.loads(body())["inputs"][0]] * 2}).encode()
    with pytest.raises(ProtocolError, match="given more than once"):
        decode(duplicate)


def test_unknown_requested_output_is_reported():
    request = parse_request(json.dumps({"inputs": json.loads(body())["inputs"], "outputs": [{"name": "x"}]}))
    with pytest.raises(ProtocolError, match="output 'x': .* expected outputs: logits"):
        requested_outputs(request, MANIFEST)


def test_response_carries_model_id_and_flat_data():
    body, header_length = encode_response(MANIFEST, "r1", {"logits": np.arange(6, dtype=np.float32).reshape(2, 3)})
    assert header_length is None
    response = orjson.loads(body)
    assert response == {
        "model_name": "digits", "model_version": "1", "id": "r1",
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [2, 3], "data": [0, 1, 2, 3, 4, 5]}],
    }


TEXT_MANIFEST = MANIFEST.model_copy(update={
    "inputs": (TensorSpec(name="input_ids", datatype="INT64", shape=(-1, -1)),
               TensorSpec(name="attention_mask", datatype="INT64", shape=(-1, -1))),
    "text_input": TextInput(tokenizer_sha256="1" * 64, max_length=8),
})


def decode_text(tensor: dict, raw: dict | None = None):
    request = parse_request(json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", **tensor}]}).encode())
    return decode_inputs(request, TEXT_MANIFEST, raw)["text"]


def test_text_models_take_strings_not_token_ids():
    texts = decode_text({"shape": [2], "data": ["héllo", ""]})
    assert texts.dtype == object and texts.tolist() == ["héllo", ""]
    assert [spec.name for spec in TEXT_MANIFEST.request_inputs] == ["text"]
    with pytest.raises(ProtocolError, match="expected inputs: text"):
        decode_inputs(parse_request(body(name="input_ids", datatype="INT64", shape=[1, 4])), TEXT_MANIFEST)


def test_binary_strings_are_length_prefixed_utf8():
    raw = b"".join(len(s).to_bytes(4, "little") + s for s in ("héllo".encode(), b"", b"x"))
    texts = decode_text({"shape": [3], "parameters": {"binary_data_size": len(raw)}}, {"text": raw})
    assert texts.tolist() == ["héllo", "", "x"]


@pytest.mark.parametrize("raw, expected", [
    (b"\x05\x00\x00\x00abc", "declares 5 bytes, only 3 remain"),
    (b"\x01\x00", "need at least 4 bytes"),
    (b"\x01\x00\x00\x00\xff", "not valid UTF-8"),
    (b"\x01\x00\x00\x00a\x00\x00\x00", "ends inside an element's 4-byte length"),
    (b"\x00\x00\x00\x00" * 3, "holds more than the 2 elements its shape declares"),
])
def test_broken_binary_strings_are_client_errors(raw, expected):
    shape = [1] if len(raw) < 8 else [2]
    with pytest.raises(ProtocolError, match=expected) as error:
        decode_text({"shape": shape, "parameters": {"binary_data_size": len(raw)}}, {"text": raw})
    assert error.value.status == 400


def test_binary_strings_are_split_no_further_than_the_declared_count():
    """A 32 MiB body of 4-byte elements declaring one string is refused after one element, not 8 million."""
    raw = b"\x00\x00\x00\x00" * (8 << 20)
    with pytest.raises(ProtocolError, match="holds more than the 1 elements"):
        decode_text({"shape": [1], "parameters": {"binary_data_size": len(raw)}}, {"text": raw})


@pytest.mark.parametrize("text", ["x" * 65, "é" * 33, "\U0001f600" * 17])  # 65, 66 and 68 bytes of UTF-8
def test_a_string_over_the_byte_limit_is_413_before_anything_reads_it(text):
    for tensor, raw in [({"data": [text]}, None),
                        ({"parameters": {"binary_data_size": 4 + len(text.encode())}},
                         {"text": len(text.encode()).to_bytes(4, "little") + text.encode()})]:
        with pytest.raises(ProtocolError, match="the limit per string is 64 bytes") as error:
            request = parse_request(json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                                            **tensor}]}).encode())
            decode_inputs(request, TEXT_MANIFEST, raw, max_string_bytes=64)
        assert error.value.status == 413
    assert decode_inputs(parse_request(json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                                               "data": ["é" * 32]}]}).encode()),
                         TEXT_MANIFEST, max_string_bytes=64)["text"].tolist() == ["é" * 32]  # exactly 64 bytes


@pytest.mark.parametrize("data, expected", [
    (["a", 1], "expected BYTES data as strings, got int"),
    (["a", None], "expected BYTES data as strings, got NoneType"),
    (["a"], "needs 2 strings, got 1"),
])
def test_text_data_must_be_strings_of_the_declared_count(data, expected):
    with pytest.raises(ProtocolError, match=expected):
        decode_text({"shape": [2], "data": data})


@pytest.mark.parametrize("bad, shown", [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf"), ("1e39", "inf")])
def test_nan_inf_and_overflowing_values_are_client_errors(bad, shown):
    raw = b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[0,1,' + bad.encode() + b',3]}]}'
    with pytest.raises(ProtocolError, match=f"expected finite numbers within float32 range, got {shown} at flat index 2"):
        decode(raw)


def test_nan_in_binary_data_is_a_client_error():
    raw = np.array([0, np.nan, 0, 0], dtype="<f4").tobytes()
    request = parse_request(json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                                    "parameters": {"binary_data_size": 16}}]}).encode())
    with pytest.raises(ProtocolError, match="got nan at flat index 1"):
        decode_inputs(request, MANIFEST, {"input": raw})
