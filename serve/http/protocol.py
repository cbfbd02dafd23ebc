"""KServe V2 / Open Inference Protocol (REST): request decoding and response encoding.

Decoding checks a request against the model's manifest and raises
ProtocolError with an HTTP status and a message naming what was expected.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from optimize.manifest import Manifest, TensorSpec
from serve.http.input_rules import id_range_problem, shared_axis_problem
from serve.http.large_body import LARGE_BODY_BYTES, JSONError, is_lazy, lazy_list, lazy_values, parse_envelope

NUMPY_DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
# numpy dtype kinds a JSON array may arrive as, per declared datatype family
_ACCEPTED_KINDS = {"b": "b", "u": "bui", "i": "bui", "f": "buif"}
MAX_STRING_BYTES = 64 << 10  # ServeSettings.max_string_bytes' default


class ProtocolError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(None, description="flat or nested values; absent with binary_data_size")


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


def parse_request(body: bytes) -> InferenceRequest:
    """The request's envelope, validated. A large body's `data` arrays stay unconverted (serve.http.large_body)
    until decode_inputs has checked them against the declared shapes."""
    try:
        if len(body) <= LARGE_BODY_BYTES:
            return InferenceRequest.model_validate_json(body)
        return _parse_large(body)
    except ValidationError as error:
        raise ProtocolError(400, f"invalid inference request: {_first_problem(error)}") from None


def _parse_large(body: bytes) -> InferenceRequest:
    try:
        envelope, lazy_data = parse_envelope(body)
    except JSONError as error:
        raise ProtocolError(400, f"invalid inference request: expected a JSON object, body is not valid JSON "
                                 f"({error})") from None
    request = InferenceRequest.model_validate_json(orjson.dumps(envelope))  # small without data: JSON-mode rules
    for tensor, data in zip(request.inputs, lazy_data):
        if data is not None:
            tensor.data = data  # checked against the shape, then converted, by decode_inputs
    return request


def _first_problem(error: ValidationError) -> str:
    problem = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in problem["loc"]) or "body"
    if problem["type"] == "json_invalid":
        return f"expected a JSON object, body is not valid JSON ({problem['msg']})"
    return f"{where}: {problem['msg']}; expected {{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \"data\"}}]}}"


def decode_inputs(
    request: InferenceRequest, manifest: Manifest, raw: dict[str, bytes] | None = None,
    max_string_bytes: int = MAX_STRING_BYTES,
) -> dict[str, np.ndarray]:
    """Turn request inputs into arrays, checking each against the manifest's input specs.

    `raw` holds the bytes of inputs sent as binary data (serve.http.binary). Each input's declared shape and
    the length of its data are checked before any value is converted, and so are the sizes of axes that
    inputs share by name; id inputs are held to their table's range after (serve.http.input_rules).
    """
    raw = raw or {}
    specs = {spec.name: spec for spec in manifest.request_inputs}
    given = _given_inputs(request, specs, manifest.name)
    _refuse(shared_axis_problem({name: tensor.shape for name, tensor in given.items()
                                 if _shape_matches(tensor.shape, specs[name].shape)}, specs))
    arrays = {name: _decode_tensor(tensor, specs[name], raw.get(name), max_string_bytes)
              for name, tensor in given.items()}
    rows = {array.shape[0] for array in arrays.values()}
    if len(rows) > 1:
        raise ProtocolError(400, f"inputs: expected the same batch size (first dimension) for all, got {sorted(rows)}")
    for name, array in arrays.items():
        _refuse(id_range_problem(array, specs[name]))
    return arrays


def _given_inputs(request: InferenceRequest, specs: dict[str, TensorSpec], model: str) -> dict[str, RequestInput]:
    """The request's inputs by name: each one the model has, once, and none missing."""
    given: dict[str, RequestInput] = {}
    for tensor in request.inputs:
        if tensor.name not in specs:
            raise ProtocolError(400, f"input {tensor.name!r}: model {model!r} has no such input; "
                                     f"expected inputs: {', '.join(specs)}")
        if tensor.name in given:
            raise ProtocolError(400, f"input {tensor.name!r}: given more than once")
        given[tensor.name] = tensor
    missing = [name for name in specs if name not in given]
    if missing:
        raise ProtocolError(400, f"missing input(s) {', '.join(missing)}; expected inputs: {', '.join(specs)}")
    return given


def _refuse(problem: str | None) -> None:
    if problem is not None:
        raise ProtocolError(400, problem)


MAX_TIMEOUT_MS = 600_000


def requested_timeout_ms(request: InferenceRequest, default_ms: float) -> float:
    """The request's own deadline (`parameters.timeout_ms`), else the server default."""
    value = (request.parameters or {}).get("timeout_ms", default_ms)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TIMEOUT_MS:
        raise ProtocolError(400, f"parameters.timeout_ms: expected a number of milliseconds in (0, {MAX_TIMEOUT_MS}], "
                                 f"got {value!r}")
    return float(value)


def requested_outputs(request: InferenceRequest, manifest: Manifest) -> tuple[str, ...]:
    known = [spec.name for spec in manifest.outputs]
    if not request.outputs:
        return tuple(known)
    names = tuple(output.name for output in request.outputs)
    for name in names:
        if name not in known:
            raise ProtocolError(400, f"output {name!r}: model {manifest.name!r} has no such output; "
                                     f"expected outputs: {', '.join(known)}")
    return names


def _decode_tensor(tensor: RequestInput, spec: TensorSpec, raw: bytes | None, max_string_bytes: int) -> np.ndarray:
    where = f"input {tensor.name!r}"
    if tensor.datatype != spec.datatype:
        raise ProtocolError(400, f"{where}: expected datatype {spec.datatype}, got {tensor.datatype}")
    if not _shape_matches(tensor.shape, spec.shape):
        raise ProtocolError(400, f"{where}: expected shape {_shape_text(spec.shape)}, got {list(tensor.shape)}")
    if spec.datatype == "BYTES":
        return _decode_strings(tensor, raw, max_string_bytes)
    if spec.datatype not in NUMPY_DTYPES:
        raise ProtocolError(400, f"{where}: datatype {spec.datatype} is not supported by this server yet")
    expected_count = math.prod(tensor.shape)
    target = np.dtype(NUMPY_DTYPES[spec.datatype])
    if raw is not None:
        if len(raw) != expected_count * target.itemsize:
            raise ProtocolError(400, f"{where}: shape {list(tensor.shape)} of {spec.datatype} needs "
                                     f"{expected_count * target.itemsize} binary bytes, got {len(raw)}")
        return _finite(np.frombuffer(raw, dtype=target.newbyteorder("<")).astype(target).reshape(tensor.shape), where)
    if tensor.data is None:
        raise ProtocolError(400, f"{where}: expected 'data', or parameters.binary_data_size with binary data")
    _check_data_length(tensor, expected_count, "values")
    try:
        values = lazy_values(tensor.data, target) if is_lazy(tensor.data) else np.asarray(tensor.data)
    except ValueError:
        raise ProtocolError(400, f"{where}: expected data as a flat or evenly nested list of numbers") from None
    if values.size and values.dtype.kind not in _ACCEPTED_KINDS[target.kind]:
        raise ProtocolError(400, f"{where}: expected {spec.datatype} numbers in data, got {values.dtype.kind!r}-kind "
                                 f"values (e.g. {str(values.flat[0])[:40]!r})")
    if values.size != expected_count:
        raise ProtocolError(400, f"{where}: shape {list(tensor.shape)} needs {expected_count} values, "
                                 f"got {values.size}")
    with np.errstate(over="ignore"):  # values beyond the datatype's range become inf: reported below
        return _finite(values.astype(target, copy=False).reshape(tensor.shape), where)


def _check_data_length(tensor: RequestInput, expected_count: int, what: str) -> None:
    """Before converting anything: flat data holds the shape's element count, nested data its first dimension."""
    data, rows = tensor.data, tensor.shape[0]
    nested = len(data) > 0 and (is_lazy(data[0]) or isinstance(data[0], list))
    if nested and len(data) != rows:
        raise ProtocolError(400, f"input {tensor.name!r}: shape {list(tensor.shape)} needs nested data with {rows} "
                                 f"lists at the top level, got {len(data)}")
    if not nested and len(data) != expected_count:
        raise ProtocolError(400, f"input {tensor.name!r}: shape {list(tensor.shape)} needs {expected_count} {what}, "
                                 f"got {len(data)}")


def _finite(array: np.ndarray, where: str) -> np.ndarray:
    """Refuse NaN and Inf (and values that overflowed the datatype): the model's answer would be NaN."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        index = int(np.flatnonzero(~np.isfinite(array.ravel()))[0])
        raise ProtocolError(400, f"{where}: expected finite numbers within {array.dtype.name} range, got "
                                 f"{array.ravel()[index]} at flat index {index}")
    return array


def _decode_strings(tensor: RequestInput, raw: bytes | None, max_string_bytes: int) -> np.ndarray:
    """BYTES as UTF-8 text: JSON strings, or binary elements each prefixed by a 4-byte little-endian length.

    Each string is held to `max_string_bytes` of UTF-8 before anything reads it further.
    """
    where = f"input {tensor.name!r}"
    expected_count = math.prod(tensor.shape)
    if raw is not None:
        split = _split_length_prefixed(raw, expected_count, where)
        items = [_utf8(_within_limit(item, index, max_string_bytes, where), where) for index, item in enumerate(split)]
    elif tensor.data is None:
        raise ProtocolError(400, f"{where}: expected 'data', or parameters.binary_data_size with binary data")
    else:
        _check_data_length(tensor, expected_count, "strings")
        data = lazy_list(tensor.data) if is_lazy(tensor.data) else tensor.data
        items = [_within_limit(item, index, max_string_bytes, where)
                 for index, item in enumerate(_flat_strings(data, where))]
    if len(items) != expected_count:
        raise ProtocolError(400, f"{where}: shape {list(tensor.shape)} needs {expected_count} strings, got {len(items)}")
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(tensor.shape)


def _flat_strings(data: list[Any], where: str):
    for item in data:
        if isinstance(item, list):
            yield from _flat_strings(item, where)
        elif isinstance(item, str):
            yield item
        else:
            raise ProtocolError(400, f"{where}: expected BYTES data as strings, got {type(item).__name__} "
                                     f"{str(item)[:40]!r}")


def _within_limit(item: str | bytes, index: int, max_bytes: int, where: str) -> str | bytes:
    """`item` if its UTF-8 is at most `max_bytes` long (a str is measured without encoding when its length
    alone decides); 413 otherwise."""
    size = len(item)
    if isinstance(item, str) and max_bytes // 4 < size <= max_bytes:
        size = len(item.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError(413, f"{where}: string {index} is {'over ' if isinstance(item, str) else ''}{max_bytes} "
                                 f"bytes of UTF-8, the limit per string is {max_bytes} bytes (max_string_bytes)")
    return item


def _split_length_prefixed(raw: bytes, expected_count: int, where: str) -> list[bytes]:
    """The elements of binary BYTES data; refused as soon as they outnumber the declared `expected_count`."""
    if len(raw) < 4 * expected_count:
        raise ProtocolError(400, f"{where}: {expected_count} binary BYTES elements need at least "
                                 f"{4 * expected_count} bytes (a 4-byte length each), got {len(raw)}")
    items, offset = [], 0
    while offset < len(raw):
        if len(items) == expected_count:
            raise ProtocolError(400, f"{where}: binary BYTES data holds more than the {expected_count} elements its "
                                     "shape declares")
        if offset + 4 > len(raw):
            raise ProtocolError(400, f"{where}: binary BYTES data ends inside an element's 4-byte length")
        size = int.from_bytes(raw[offset : offset + 4], "little")
        if offset + 4 + size > len(raw):
            raise ProtocolError(400, f"{where}: binary BYTES element declares {size} bytes, only "
                                     f"{len(raw) - offset - 4} remain")
        items.append(raw[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return items


def _utf8(item: bytes, where: str) -> str:
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ProtocolError(400, f"{where}: expected UTF-8 text, byte {error.start} is not valid UTF-8") from None


def _shape_matches(shape: list[int], declared: tuple[int, ...]) -> bool:
    if len(shape) != len(declared) or not shape:
        return False
    return all(size >= 1 and (want == -1 or size == want) for size, want in zip(shape, declared))


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "] (-1: any size >= 1)"


def encode_response(
    manifest: Manifest, request_id: str | None, outputs: dict[str, np.ndarray], binary: frozenset[str] = frozenset()
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when `binary` outputs follow it as raw bytes."""
    datatypes = {spec.name: spec.datatype for spec in manifest.outputs}
    body: dict[str, Any] = {"model_name": manifest.name, "model_version": manifest.version}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"], tail = [], []
    for name, array in outputs.items():
        entry: dict[str, Any] = {"name": name, "datatype": datatypes[name], "shape": list(array.shape)}
        flat = np.ascontiguousarray(array).ravel()
        if name in binary:
            tail.append(flat.astype(flat.dtype.newbyteorder("<")).tobytes())
            entry["parameters"] = {"binary_data_size": len(tail[-1])}
        else:
            entry["data"] = flat
        body["outputs"].append(entry)
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return (header + b"".join(tail), len(header)) if tail else (header, None)


# litert: Triton reports a backend's name where a model has no platform, and names its TFLite backend "tflite"
# (now "armnn_tflite", which adds Arm NN: not run here)
PLATFORMS = {"torchscript": "pytorch_libtorch", "torch_export": "pytorch_torch_export", "litert": "tflite"}


def model_metadata(manifest: Manifest, versions: list[str], execution_provider: str | None = None) -> dict[str, Any]:
    """KServe V2 model metadata, plus what runs the model here (an onnxruntime provider, torch device, engine)."""
    def tensors(specs):
        return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]

    metadata = {
        "name": manifest.name,
        "versions": versions,
        "platform": PLATFORMS.get(manifest.runtime, "onnxruntime_onnx"),
        "inputs": tensors(manifest.request_inputs),
        "outputs": tensors(manifest.outputs),
    }
    if execution_provider is not None:
        metadata["execution_provider"] = execution_provider
    return metadata
