"""The binary tensor data extension (what Triton's HTTP clients send and expect by default).

A request body is a JSON header of `Inference-Header-Content-Length` bytes,
then the raw little-endian bytes of every input whose parameters carry
`binary_data_size`, in the order the inputs are listed. Outputs asked for with
`parameters.binary_data: true` (or all outputs, with the request parameter
`binary_data_output: true`) come back the same way.
"""

from __future__ import annotations

from serve.http.guards import header_integer
from serve.http.protocol import InferenceRequest, ProtocolError

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSION = "binary_tensor_data"  # its name in the server metadata's `extensions`, as Triton lists it


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail); without the header the whole body is JSON."""
    if header_length is None:
        return body, b""
    size = header_integer(header_length)
    if size is None or size > len(body):
        raise ProtocolError(400, f"{HEADER_LENGTH}: expected the JSON header's length in bytes as ASCII digits, "
                                 f"at most the body's {len(body)}, got {header_length[:40]!r}")
    return body[:size], body[size:]


def binary_inputs(request: InferenceRequest, tail: bytes) -> dict[str, bytes]:
    """Slice the binary tail into each input that declares `binary_data_size`."""
    sliced, offset = {}, 0
    for tensor in request.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(tail):
            raise ProtocolError(400, f"input {tensor.name!r}: binary_data_size {size!r} does not fit the "
                                     f"{len(tail) - offset} binary bytes left after the JSON header")
        sliced[tensor.name] = tail[offset : offset + size]
        offset += size
    if offset != len(tail):
        raise ProtocolError(400, f"expected {offset} bytes of binary input data after the JSON header, "
                                 f"got {len(tail)}")
    return sliced


def binary_outputs(request: InferenceRequest, names: tuple[str, ...]) -> frozenset[str]:
    """The outputs to return as raw bytes rather than JSON numbers."""
    if (request.parameters or {}).get("binary_data_output") is True:
        return frozenset(names)
    return frozenset(o.name for o in request.outputs or () if (o.parameters or {}).get("binary_data") is True)
