"""An in-process LRU cache of inference results with a byte budget and an optional TTL.

The key covers everything that determines the answer: the answer scope (a hash
of the artifact's whole manifest and of how this replica runs it: model and
tokenizer sha256, name, version, text settings, runtime, execution provider),
each input tensor's name, datatype, shape and bytes, and the outputs asked for.
The request `id` is deliberately not part of it.

The budget counts what an entry really holds in memory (`entry_bytes`): the
arrays with their buffers, the result dict, the key, and a measured per-entry
overhead, so `max_bytes` bounds the replica's resident memory, not just the
arrays' payload.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections import OrderedDict
from typing import Iterable

import numpy as np

from optimize.manifest import Manifest

Result = dict[str, np.ndarray]

# Per entry beyond sys.getsizeof of the key, the result dict and its arrays, measured on
# CPython 3.11 with numpy 2.4 (tests/serve/test_cache_memory.py checks it on the installed
# versions): the (result, size, time) tuple with its int and float (116 bytes), the
# OrderedDict's node and its share of the hash table, which under eviction churn is
# resized to 3-6 slots per live entry (110-210 bytes; 163 traced in all when the cache only
# fills, 243 under churn), and malloc's and pymalloc's slack in RSS (60-100 bytes).
ENTRY_OVERHEAD_BYTES = 360
# Per array beyond sys.getsizeof (which counts an owning array's buffer): the
# buffer's malloc header and rounding, about 24 bytes resident.
ARRAY_OVERHEAD_BYTES = 24


def answer_scope(manifest: Manifest, execution_provider: str) -> str:
    """A hash of everything beside the request that decides an answer: the whole manifest (model file and
    tokenizer sha256, name, version, text settings, runtime, TensorRT engine) and what runs it here
    (execution provider: CPU, CUDA, TensorRT or torch with its dtype, which answer slightly differently)."""
    digest = hashlib.sha256()
    _update_framed(digest, manifest.model_dump_json().encode())
    _update_framed(digest, execution_provider.encode())
    return digest.hexdigest()


def cache_key(scope: str, inputs: dict[str, np.ndarray], outputs: Iterable[str]) -> bytes:
    """`scope`: answer_scope() of the model serving the request."""
    digest = hashlib.blake2b(digest_size=32)
    for part in (scope, *sorted(outputs)):
        _update_framed(digest, part.encode())
    for name in sorted(inputs):
        array = np.ascontiguousarray(inputs[name])
        _update_framed(digest, name.encode())
        _update_framed(digest, array.dtype.str.encode())
        _update_framed(digest, repr(array.shape).encode())
        if array.dtype == object:  # strings: the bytes of each, not the pointers to them
            for item in array.ravel():
                _update_framed(digest, item.encode())
        else:
            _update_framed(digest, array.tobytes())
    return digest.digest()


def _update_framed(digest, data: bytes) -> None:
    """Length-prefix each part so ("ab", "c") and ("a", "bc") never collide."""
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)


class ResultCache:
    """LRU over results; evicts least recently used entries beyond `max_bytes`.

    With `ttl_s`, an entry older than that is never returned. `evictions`
    counts entries dropped for room or age.
    """

    def __init__(self, max_bytes: int, ttl_s: float | None = None, clock=time.monotonic) -> None:
        self.bytes = 0
        self.evictions = 0
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[Result, int, float]] = OrderedDict()
        self.resize(max_bytes, ttl_s)

    def resize(self, max_bytes: int, ttl_s: float | None = None) -> None:
        """Change the budget and TTL, evicting least recently used entries beyond the budget."""
        if max_bytes < 0:
            raise ValueError(f"max_bytes: expected >= 0, got {max_bytes}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s: expected > 0 or None, got {ttl_s}")
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._evict()

    def _evict(self) -> None:
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: bytes) -> None:
        _, size, _ = self._entries.pop(key)
        self.bytes -= size
        self.evictions += 1

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Result | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.ttl_s is not None and self._clock() - entry[2] > self.ttl_s:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, result: Result) -> None:
        """Store a read-only copy (a slice of a batch output would pin the whole batch's memory)."""
        stored = {name: np.array(array, copy=True) for name, array in result.items()}
        size = entry_bytes(key, stored)
        if size > self.max_bytes:
            return
        if key in self._entries:
            self.bytes -= self._entries.pop(key)[1]
        for array in stored.values():
            array.setflags(write=False)
        self._entries[key] = (stored, size, self._clock())
        self.bytes += size
        self._evict()


def entry_bytes(key: bytes, result: Result) -> int:
    """Memory one cache entry holds: key, result dict, arrays (buffers included: each owns its data) and the
    measured per-entry and per-array overheads."""
    arrays = sum(sys.getsizeof(array) + ARRAY_OVERHEAD_BYTES for array in result.values())
    return sys.getsizeof(key) + sys.getsizeof(result) + arrays + ENTRY_OVERHEAD_BYTES
