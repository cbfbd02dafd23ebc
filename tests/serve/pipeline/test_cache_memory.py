"""The result cache's byte count against the memory its entries really take, on this Python and numpy.

`entry_bytes` adds sys.getsizeof of the parts to two measured constants
(serve/pipeline/cache.py); these tests fail if a Python or numpy upgrade moves what an
entry costs away from them. The replica's own RSS under a full cache is
tested in tests/e2e/test_cache_memory.py.
"""

from __future__ import annotations

import gc
import hashlib
import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from serve.pipeline.cache import ResultCache

SHAPES = {  # what the served models answer for one request
    "digits, one row": {"logits": ((1, 10), np.float32)},
    "digits, eight rows": {"logits": ((8, 10), np.float32)},
    "two outputs": {"logits": ((1, 10), np.float32), "probabilities": ((1, 10), np.float32)},
    "minilm embedding": {"embedding": ((1, 384), np.float32)},
}


def unique_key(index: int) -> bytes:
    return hashlib.blake2b(index.to_bytes(8, "little"), digest_size=32).digest()  # as cache_key's


def results(outputs: dict, count: int = 50) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{name: rng.random(shape).astype(dtype) for name, (shape, dtype) in outputs.items()} for _ in range(count)]


@pytest.mark.parametrize("outputs", SHAPES.values(), ids=SHAPES.keys())
def test_the_count_covers_every_byte_python_allocates_for_the_entries(outputs):
    """tracemalloc sees every allocation of Python and numpy. Filled three times past its budget (evictions
    grow the OrderedDict's table), the cache's count must not be below what it allocated (the issue: 72
    counted for 579 allocated per digits entry), nor far above it (a budget holding a third of what it could)."""
    answers = results(outputs)
    budget = 3_000 * sum(np.prod(shape) * 4 + 800 for shape, _ in outputs.values())  # about 3,000 entries
    cache = ResultCache(max_bytes=budget)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(10_000):
            cache.put(unique_key(index), answers[index % len(answers)])
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert cache.evictions > 0
    assert traced <= cache.bytes <= 1.5 * traced, f"counted {cache.bytes} bytes, Python allocated {traced}"


FILL = """
import hashlib, json, sys
import numpy as np, psutil
from serve.pipeline.cache import ResultCache

budget, entries = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
answers = [{"logits": rng.random((1, 10), dtype=np.float32)} for _ in range(50)]
cache = ResultCache(budget)
process = psutil.Process()
before = process.memory_info().rss
for index in range(entries):
    cache.put(hashlib.blake2b(index.to_bytes(8, "little"), digest_size=32).digest(), answers[index % 50])
print(json.dumps({"growth": process.memory_info().rss - before, "counted": cache.bytes, "held": len(cache)}))
"""


def test_a_full_cache_grows_a_process_by_about_its_budget():
    """Past its budget, with digits-sized entries (the smallest, where overheads dominate), in a fresh process
    so nothing else allocates meanwhile. Measured on CPython 3.11 / numpy 2.4: growth 0.88-1.01x the budget
    (2-32 MiB budgets, 1-10x the entries they hold). The bound, 1.25x + 2 MiB, leaves room for the allocator;
    with the old count (payload and key alone, 72 bytes per digits entry) this run grew 25 MB, 3x the budget,
    holding all 40,000 entries."""
    budget, entries = 8 << 20, 40_000  # about 10,500 entries fit: nearly four times past the budget
    run = subprocess.run([sys.executable, "-c", FILL, str(budget), str(entries)], capture_output=True, text=True,
                         timeout=120, check=True)
    measured = json.loads(run.stdout)
    assert measured["held"] < entries and measured["counted"] <= budget  # the budget was reached and evicted
    assert measured["growth"] <= 1.25 * budget + (2 << 20), measured
