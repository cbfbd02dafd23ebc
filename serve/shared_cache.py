"""An optional shared cache tier in Redis, so replicas share each other's results.

Results are stored without pickle: a small JSON header (names, dtypes, shapes)
and the raw array bytes. Keys are the local cache's keys (they already cover
model sha256, version, inputs and outputs asked for) under a prefix.

Redis trouble never becomes an error: a failed or slow call counts as a miss,
and after a failure the tier rests for `retry_after_s` before trying again, so
an outage costs one timeout, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import numpy as np
import orjson

log = logging.getLogger("optiserve.serve")
Result = dict[str, np.ndarray]
PREFIX = b"optiserve:result:"


def encode_result(result: Result) -> bytes:
    arrays = {name: np.ascontiguousarray(array) for name, array in result.items()}
    header = orjson.dumps([[name, array.dtype.str, list(array.shape)] for name, array in arrays.items()])
    return len(header).to_bytes(4, "little") + header + b"".join(a.tobytes() for a in arrays.values())


def decode_result(blob: bytes) -> Result:
    size = int.from_bytes(blob[:4], "little")
    offset = 4 + size
    result = {}
    for name, dtype, shape in orjson.loads(blob[4:offset]):
        array_dtype = np.dtype(dtype)
        if array_dtype.hasobject:
            raise ValueError("object arrays are never cached")
        elements = int(np.prod(shape))
        end = offset + elements * array_dtype.itemsize
        if end > len(blob):
            raise ValueError(f"cached result: expected at least {end} bytes, got {len(blob)}")
        result[name] = np.frombuffer(blob, dtype=array_dtype, count=elements, offset=offset).reshape(shape)
        offset = end
    if offset != len(blob):
        raise ValueError(f"cached result: expected {offset} bytes, got {len(blob)}")
    return result


class RedisTier:
    def __init__(self, url: str, timeout_s: float = 0.05, ttl_s: float | None = None, retry_after_s: float = 5.0,
                 on_failure: Callable[[], None] = lambda: None):
        """`on_failure` is called once for every failed or timed-out call, reads and writes alike."""
        import redis.asyncio

        self._client = redis.asyncio.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._timeout_s = timeout_s
        self._ttl_ms = int(ttl_s * 1000) if ttl_s else None
        self._retry_after_s = retry_after_s
        self._resting_until = 0.0
        self._on_failure = on_failure
        self.errors = 0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._resting_until

    async def get(self, key: bytes) -> Result | None:
        if not self.available:
            return None
        try:
            blob = await asyncio.wait_for(self._client.get(PREFIX + key), self._timeout_s)
            return decode_result(blob) if blob is not None else None
        except Exception as error:  # an outage or a bad entry is a miss, never an error
            self._rest(error)
            return None

    async def put(self, key: bytes, result: Result) -> None:
        if not self.available:
            return
        try:
            await asyncio.wait_for(self._client.set(PREFIX + key, encode_result(result), px=self._ttl_ms),
                                   self._timeout_s)
        except Exception as error:
            self._rest(error)

    def _rest(self, error: Exception) -> None:
        self.errors += 1
        self._on_failure()
        if self.available:
            log.warning("shared cache unavailable (%r); local cache only for %.0f s", error, self._retry_after_s)
        self._resting_until = time.monotonic() + self._retry_after_s

    async def close(self) -> None:
        await self._client.aclose()
