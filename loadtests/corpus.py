"""Malformed inference requests for the digits model, and the answer each should get.

Every case is a request a buggy or hostile client could send. The server should
answer each with the 4xx status given here and a JSON body `{"error": "..."}`
whose message contains `says` (what was wrong), and stay healthy for everyone else.
No locust import here: the load generator and the tests share this module.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import orjson

JSON_HEADERS = {"Content-Type": "application/json"}
HUGE_BODY_BYTES = 100 * 1024 * 1024
NESTING_DEPTH = 100_000


@dataclass(frozen=True)
class BadRequest:
    name: str
    status: int
    says: str  # a fragment of the error message
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_HEADERS))
    weight: int = 10  # how often a load test sends it, relative to the others

    def body(self) -> bytes:
        return _BODIES[self.name]()


def _tensor(shape: list, datatype: str = "FP32", data: object = None, name: str = "input") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": [0.5] * 64 if data is None else data}


def _request(**tensor: object) -> bytes:
    return orjson.dumps({"inputs": [_tensor(**tensor)]})


def _with_first_value(literal: bytes) -> bytes:
    """A valid request whose first value is a raw JSON token orjson would not write (NaN, Infinity)."""
    return _request(shape=[1, 64]).replace(b'"data":[0.5', b'"data":[' + literal, 1)


_HUGE_HEAD, _HUGE_VALUE, _HUGE_TAIL = b'{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":[', \
    b"0.5,", b'0.5]}]}'
_HUGE_VALUES = (HUGE_BODY_BYTES - 100) // len(_HUGE_VALUE)
HUGE_BODY_LENGTH = len(_HUGE_HEAD) + _HUGE_VALUES * len(_HUGE_VALUE) + len(_HUGE_TAIL)


@functools.lru_cache(maxsize=1)
def _huge_body() -> bytes:
    """A 100 MB request that is otherwise well formed: 26 million values for a [1, 64] input."""
    return _HUGE_HEAD + _HUGE_VALUE * _HUGE_VALUES + _HUGE_TAIL


_BODIES = {
    "truncated_json": lambda: _request(shape=[1, 64])[:150],
    "empty_body": lambda: b"",
    "not_an_object": lambda: b"[1, 2, 3]",
    "no_inputs": lambda: b'{"id": "x"}',
    "shape_data_mismatch": lambda: _request(shape=[2, 64]),
    "wrong_feature_count": lambda: _request(shape=[1, 65], data=[0.5] * 65),
    "wrong_datatype": lambda: _request(shape=[1, 64], datatype="INT64"),
    "datatype_not_a_string": lambda: _request(shape=[1, 64], datatype=5),
    "strings_as_numbers": lambda: _request(shape=[1, 64], data=["0.5"] * 64),
    "ragged_rows": lambda: _request(shape=[2, 64], data=[[0.5] * 64, [0.5] * 3]),
    "unknown_input_name": lambda: _request(shape=[1, 64], name="image"),
    "nan_value": lambda: _with_first_value(b"NaN"),
    "infinity_value": lambda: _with_first_value(b"Infinity"),
    "beyond_fp32_range": lambda: _with_first_value(b"1e39"),
    "huge_declared_shape": lambda: _request(shape=[1_000_000_000, 64]),
    "body_100mb": _huge_body,
    "deeply_nested_json": lambda: _request(shape=[1, 64], data="@").replace(
        b'"@"', b"[" * NESTING_DEPTH + b"]" * NESTING_DEPTH),
    "form_content_type": lambda: b"inputs=input&shape=1,64&datatype=FP32",
    "non_utf8_bytes": lambda: _request(shape=[1, 64], name="@").replace(b"@", b"\xff\xfe"),
    "bad_binary_header_length": lambda: _request(shape=[1, 64]),
    "binary_header_length_5000_digits": lambda: _request(shape=[1, 64]),
    "zero_sized_dimension": lambda: _request(shape=[1, 0], data=[]),
    "million_values_for_one_row": lambda: _request(shape=[1, 64], data=[0.5] * 1_000_000),
}

CORPUS: tuple[BadRequest, ...] = (
    BadRequest("truncated_json", 400, "not valid JSON"),
    BadRequest("empty_body", 400, "not valid JSON"),
    BadRequest("not_an_object", 400, "Input should be an object"),
    BadRequest("no_inputs", 400, "inputs: Field required"),
    BadRequest("shape_data_mismatch", 400, "shape [2, 64] needs 128 values, got 64"),
    BadRequest("wrong_feature_count", 400, "expected shape [-1, 64]"),
    BadRequest("wrong_datatype", 400, "expected datatype FP32, got INT64"),
    BadRequest("datatype_not_a_string", 400, "datatype"),
    BadRequest("strings_as_numbers", 400, "expected FP32 numbers"),
    BadRequest("ragged_rows", 400, "evenly nested"),
    BadRequest("unknown_input_name", 400, "has no such input"),
    BadRequest("nan_value", 400, "finite"),
    BadRequest("infinity_value", 400, "finite"),
    BadRequest("beyond_fp32_range", 400, "finite"),
    BadRequest("huge_declared_shape", 413, "elements"),
    # The 100 MB body and the 100,000-deep nesting cost the client more than the server: sent rarely.
    # Refused on its Content-Length, before the body is read: the message names the declared size (a refusal
    # after reading would say only "request body exceeds the limit").
    BadRequest("body_100mb", 413, f"request body of {HUGE_BODY_LENGTH} bytes exceeds the limit", weight=1),
    BadRequest("deeply_nested_json", 400, "recursion limit", weight=1),
    BadRequest("form_content_type", 400, "not valid JSON",
               headers={"Content-Type": "application/x-www-form-urlencoded"}),
    BadRequest("non_utf8_bytes", 400, "not valid JSON"),
    BadRequest("bad_binary_header_length", 400, "Inference-Header-Content-Length",
               headers={**JSON_HEADERS, "Inference-Header-Content-Length": "999999"}),
    # int() refuses over 4,300 digits: this was a 500
    BadRequest("binary_header_length_5000_digits", 400, "as ASCII digits",
               headers={**JSON_HEADERS, "Inference-Header-Content-Length": "9" * 5000}),
    BadRequest("zero_sized_dimension", 400, "any size >= 1"),
    # 8.5 MB: refused by its length before any value is converted (serve/http/large_body.py)
    BadRequest("million_values_for_one_row", 400, "shape [1, 64] needs 64 values, got 1000000", weight=1),
)


def bad_request(name: str) -> BadRequest:
    for case in CORPUS:
        if case.name == name:
            return case
    raise KeyError(f"no malformed-request case {name!r}; cases: {', '.join(c.name for c in CORPUS)}")


def check_answer(case: BadRequest, status: int, body: bytes) -> str | None:
    """None if the server answered `case` as it should, else what was wrong."""
    if status != case.status:
        return f"{case.name}: expected status {case.status}, got {status} ({body[:200]!r})"
    try:
        message = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return f"{case.name}: expected a JSON body {{\"error\": ...}}, got {body[:200]!r}"
    if not isinstance(message, str) or case.says not in message:
        return f"{case.name}: expected an error message containing {case.says!r}, got {message!r}"
    return None
