"""Request guards that run before any parsing: bearer-token auth and size limits."""

from __future__ import annotations

import hmac
import math
import re
from typing import AsyncIterator

from serve.http.protocol import InferenceRequest, ProtocolError


def check_bearer_token(authorization: str | None, token: str | None) -> None:
    """Raise 401 unless `Authorization: Bearer <token>` matches (constant-time); no token set means open."""
    if token is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ProtocolError(401, "expected header 'Authorization: Bearer <token>' with this server's token",
                            {"WWW-Authenticate": 'Bearer realm="optiserve"'})


_DECIMAL = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() also takes '²', which int() refuses


def header_integer(value: str | None) -> int | None:
    """A header's non-negative decimal integer (up to 18 digits), or None when absent or not one."""
    if value is None or not _DECIMAL.fullmatch(value.strip()):
        return None
    return int(value)


async def read_body(declared_length: str | None, chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `max_bytes`.

    `declared_length` is the Content-Length header (None when absent); a lying one is caught while reading.
    """
    declared = header_integer(declared_length)
    if declared is not None and declared > max_bytes:
        raise ProtocolError(413, f"request body of {declared} bytes exceeds the limit of {max_bytes} bytes")
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise ProtocolError(413, f"request body exceeds the limit of {max_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)


def check_element_count(request: InferenceRequest, max_elements: int, max_strings: int | None = None) -> None:
    """Refuse with 413 a request whose declared tensor shapes add up to more than `max_elements` values, or
    more than `max_strings` BYTES elements. Runs before any data is converted."""
    total = strings = 0
    for tensor in request.inputs:
        if any(size < 0 for size in tensor.shape):
            continue  # a negative size is a shape error, reported with the expected shape later
        count = math.prod(tensor.shape)
        total += count
        if total > max_elements:
            raise ProtocolError(413, f"input {tensor.name!r}: shape {tensor.shape} brings the request to more than "
                                     f"{max_elements} elements, the limit per request")
        strings += count if tensor.datatype == "BYTES" else 0
        if max_strings is not None and strings > max_strings:
            raise ProtocolError(413, f"input {tensor.name!r}: shape {tensor.shape} brings the request to more than "
                                     f"{max_strings} BYTES elements (strings), the limit per request (max_strings)")
