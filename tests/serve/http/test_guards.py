import asyncio
import json

import pytest

from serve.http.guards import check_bearer_token, check_element_count, header_integer, read_body
from serve.http.protocol import ProtocolError, parse_request


def test_no_token_configured_means_open():
    check_bearer_token(None, None)


@pytest.mark.parametrize("header", [None, "", "Bearer wrong", "Basic secret", "secret", "Bearer secre"])
def test_a_missing_or_wrong_token_is_401_with_a_challenge(header):
    with pytest.raises(ProtocolError) as caught:
        check_bearer_token(header, "secret")
    assert caught.value.status == 401 and "WWW-Authenticate" in caught.value.headers


def test_the_right_token_passes_whatever_the_scheme_case():
    check_bearer_token("Bearer secret", "secret")
    check_bearer_token("bearer secret", "secret")


async def chunks_of(body: bytes):
    for start in range(0, max(len(body), 1), 10):
        yield body[start : start + 10]


def test_a_body_within_the_limit_is_read_whole():
    assert asyncio.run(read_body("95", chunks_of(b"x" * 95), max_bytes=100)) == b"x" * 95


@pytest.mark.parametrize("declared", ["1000", None, "5"])  # honest, absent, and lying Content-Length
def test_a_body_over_the_limit_is_413_whatever_content_length_says(declared):
    with pytest.raises(ProtocolError) as caught:
        asyncio.run(read_body(declared, chunks_of(b"x" * 1000), max_bytes=100))
    assert caught.value.status == 413 and "limit of 100 bytes" in caught.value.message


def request_with_shapes(*shapes):
    return parse_request(json.dumps({"inputs": [
        {"name": f"t{i}", "shape": list(shape), "datatype": "FP32", "data": []} for i, shape in enumerate(shapes)]}))


def test_element_count_adds_up_across_inputs():
    check_element_count(request_with_shapes((10, 10)), max_elements=100)
    with pytest.raises(ProtocolError) as caught:
        check_element_count(request_with_shapes((10, 10), (1, 1)), max_elements=100)
    assert caught.value.status == 413 and "more than 100 elements" in caught.value.message


def test_a_huge_declared_shape_is_refused_before_any_data_is_converted():
    with pytest.raises(ProtocolError, match="limit per request"):
        check_element_count(request_with_shapes((10**12, 64)), max_elements=10**6)


@pytest.mark.parametrize("declared", ["9" * 5000, "\u00b2", "\u0664\u0662", "-5", "1e3", " "])
def test_a_content_length_that_is_not_ascii_digits_is_ignored_and_the_body_is_still_held_to_the_limit(declared):
    assert asyncio.run(read_body(declared, chunks_of(b"x" * 95), max_bytes=100)) == b"x" * 95
    with pytest.raises(ProtocolError) as caught:
        asyncio.run(read_body(declared, chunks_of(b"x" * 1000), max_bytes=100))
    assert caught.value.status == 413


@pytest.mark.parametrize("value, expected", [
    ("123", 123), (" 42 ", 42), ("0", 0), (None, None), ("", None), ("9" * 19, None), ("\u00b2", None), ("+1", None),
])
def test_header_integer_takes_only_short_runs_of_ascii_digits(value, expected):
    assert header_integer(value) == expected


def test_strings_have_their_own_limit_per_request():
    def texts(*shapes):
        return parse_request(json.dumps({"inputs": [{"name": f"t{i}", "shape": list(shape), "datatype": "BYTES",
                                                     "data": []} for i, shape in enumerate(shapes)]}))

    check_element_count(texts((8,)), max_elements=100, max_strings=8)
    check_element_count(request_with_shapes((50,)), max_elements=100, max_strings=8)  # numbers are not strings
    with pytest.raises(ProtocolError) as caught:
        check_element_count(texts((8,), (1,)), max_elements=100, max_strings=8)
    assert caught.value.status == 413 and "more than 8 BYTES elements" in caught.value.message
