"""An optional shared cache tier in Redis, so replicas share each other's results.

Results are stored without pickle: a small JSON header (names, dtypes, shapes)
and the raw array bytes. Keys are the local cache's keys (they already cover
the answer scope, a hash of the whole manifest and the execution provider,
the inputs and the outputs asked for) under a prefix.

Redis trouble never becomes an error: a failed or slow call counts as a miss,
and after a failure the tier rests for `retry_after_s` before trying again, so
an outage costs one timeout, not one per request. An entry read back is used
only if it is exactly what this model answers for the request (the outputs
asked for, their datatypes, the request's rows and the outputs' other
dimensions); any other entry, truncated or garbled ones included, is a miss
counted by `on_rejected`, never a wrong answer or an error.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Callable, Iterable

import numpy as np
import orjson

from optimize.manifest import TensorSpec
from serve.http.protocol import NUMPY_DTYPES

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
        if not all(type(dim) is int and dim >= 0 for dim in shape) or name in result:
            raise ValueError(f"cached result: expected one shape of non-negative integers per output, got {name!r} "
                             f"{shape!r}")
        elements = math.prod(shape)
        end = offset + elements * array_dtype.itemsize
        if end > len(blob):
            raise ValueError(f"cached result: expected at least {end} bytes, got {len(blob)}")
        result[name] = np.frombuffer(blob, dtype=array_dtype, count=elements, offset=offset).reshape(shape)
        offset = end
    if offset != len(blob):
        raise ValueError(f"cached result: expected {offset} bytes, got {len(blob)}")
    return result


def check_result(result: Result, outputs: tuple[TensorSpec, ...], rows: int) -> None:
    """Raise ValueError unless `result` is what the model answers to a request of `rows` rows asking for
    `outputs`: exactly those outputs, each of its datatype, with `rows` rows and the spec's other dimensions."""
    names = sorted(spec.name for spec in outputs)
    if sorted(result) != names:
        raise ValueError(f"cached result: expected outputs {names}, got {sorted(result)}")
    for spec in outputs:
        array = result[spec.name]
        dtype = np.dtype(NUMPY_DTYPES[spec.datatype]) if spec.datatype in NUMPY_DTYPES else None
        if array.dtype != dtype:
            raise ValueError(f"cached result: output {spec.name!r}: expected {spec.datatype}, got {array.dtype.str}")
        expected = (rows, *spec.shape[1:])
        if len(array.shape) != len(expected) or any(want not in (-1, got) for want, got in zip(expected, array.shape)):
            raise ValueError(f"cached result: output {spec.name!r}: expected shape {list(expected)} (-1: any), "
                             f"got {list(array.shape)}")


class RedisTier:
    def __init__(self, url: str, outputs: tuple[TensorSpec, ...], timeout_s: float = 0.05, ttl_s: float | None = None,
                 retry_after_s: float = 5.0, on_failure: Callable[[], None] = lambda: None,
                 on_rejected: Callable[[], None] = lambda: None):
        """`outputs`: the model's output specs, which entries read back must fit. `on_failure` is called once for
        every failed or timed-out call, reads and writes alike; `on_rejected` once for every entry read back
        that does not fit (a miss)."""
        import redis.asyncio

        self._client = redis.asyncio.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._outputs = {spec.name: spec for spec in outputs}
        self._timeout_s = timeout_s
        self._ttl_ms = int(ttl_s * 1000) if ttl_s else None
        self._retry_after_s = retry_after_s
        self._resting_until = 0.0
        self._on_failure = on_failure
        self._on_rejected = on_rejected
        self.errors = 0
        self.rejected = 0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._resting_until

    async def get(self, key: bytes, outputs: Iterable[str], rows: int) -> Result | None:
        """The entry for `key` if Redis has one that fits a request of `rows` rows asking for `outputs`."""
        if not self.available:
            return None
        try:
            blob = await asyncio.wait_for(self._client.get(PREFIX + key), self._timeout_s)
        except Exception as error:  # an outage is a miss, never an error
            self._rest(error)
            return None
        if blob is None:
            return None
        try:
            result = decode_result(blob)
            check_result(result, tuple(self._outputs[name] for name in outputs), rows)
        except Exception as error:  # noqa: BLE001 - bytes from outside: whatever they hold, a miss, not a 500
            self._reject(error)
            return None
        return result

    async def put(self, key: bytes, result: Result) -> None:
        if not self.available:
            return
        try:
            await asyncio.wait_for(self._client.set(PREFIX + key, encode_result(result), px=self._ttl_ms),
                                   self._timeout_s)
        except Exception as error:
            self._rest(error)

    def _reject(self, error: Exception) -> None:
        """An entry that does not fit: counted and logged (the first), not rested on, since Redis itself works;
        the computed answer then overwrites it."""
        self.rejected += 1
        self._on_rejected()
        if self.rejected == 1:
            log.warning("shared cache entry refused, served as a miss (%s); further ones are only counted", error)

    def _rest(self, error: Exception) -> None:
        self.errors += 1
        self._on_failure()
        if self.available:
            log.warning("shared cache unavailable (%r); local cache only for %.0f s", error, self._retry_after_s)
        self._resting_until = time.monotonic() + self._retry_after_s

    async def close(self) -> None:
        await self._client.aclose()
