import numpy as np
import pytest

from serve.cache import ResultCache, cache_key

SHA = "a" * 64


def inputs(value=1.0, dtype=np.float32, shape=(1, 4)):
    return {"input": np.full(shape, value, dtype=dtype)}


def test_identical_requests_share_a_key():
    assert cache_key(SHA, "1", inputs(), ["logits"]) == cache_key(SHA, "1", inputs(), ["logits"])


@pytest.mark.parametrize(
    "other",
    [
        lambda: cache_key("b" * 64, "1", inputs(), ["logits"]),  # another model
        lambda: cache_key(SHA, "2", inputs(), ["logits"]),  # another version
        lambda: cache_key(SHA, "1", inputs(2.0), ["logits"]),  # other values
        lambda: cache_key(SHA, "1", inputs(dtype=np.float64), ["logits"]),  # other datatype
        lambda: cache_key(SHA, "1", inputs(shape=(2, 2)), ["logits"]),  # same bytes, other shape
        lambda: cache_key(SHA, "1", {"other": inputs()["input"]}, ["logits"]),  # other input name
        lambda: cache_key(SHA, "1", inputs(), ["probabilities"]),  # other outputs asked for
    ],
)
def test_anything_that_changes_the_answer_changes_the_key(other):
    assert other() != cache_key(SHA, "1", inputs(), ["logits"])


def test_output_order_does_not_matter():
    assert cache_key(SHA, "1", inputs(), ["a", "b"]) == cache_key(SHA, "1", inputs(), ["b", "a"])


def result(n_floats):
    return {"logits": np.zeros(n_floats, dtype=np.float32)}


def test_get_returns_what_was_put_and_counts_bytes():
    cache = ResultCache(max_bytes=10_000)
    cache.put(b"k", result(10))
    assert cache.get(b"k")["logits"].shape == (10,)
    assert cache.get(b"missing") is None
    assert cache.bytes == 40 + len(b"k")


def test_least_recently_used_entry_is_evicted_beyond_the_budget():
    cache = ResultCache(max_bytes=3 * (400 + 2))
    for key in (b"k1", b"k2", b"k3"):
        cache.put(key, result(100))
    cache.get(b"k1")  # k2 is now the least recently used
    cache.put(b"k4", result(100))
    assert cache.get(b"k2") is None
    assert all(cache.get(k) is not None for k in (b"k1", b"k3", b"k4"))
    assert cache.bytes <= cache.max_bytes and len(cache) == 3


def test_an_entry_larger_than_the_budget_is_not_stored():
    cache = ResultCache(max_bytes=100)
    cache.put(b"big", result(1000))
    assert cache.get(b"big") is None and cache.bytes == 0


def test_replacing_a_key_does_not_double_count():
    cache = ResultCache(max_bytes=10_000)
    cache.put(b"k", result(10))
    cache.put(b"k", result(20))
    assert len(cache) == 1 and cache.bytes == 80 + 1


def test_cached_arrays_cannot_be_mutated_by_a_caller():
    cache = ResultCache(max_bytes=10_000)
    cache.put(b"k", result(4))
    with pytest.raises(ValueError):
        cache.get(b"k")["logits"][0] = 1.0


def test_negative_budget_is_refused():
    with pytest.raises(ValueError, match="expected >= 0"):
        ResultCache(-1)


def test_a_slice_of_a_batch_output_is_stored_on_its_own():
    batch_output = np.zeros((32, 10), dtype=np.float32)
    cache = ResultCache(max_bytes=10_000)
    cache.put(b"row", {"logits": batch_output[3:4]})
    stored = cache.get(b"row")["logits"]
    assert stored.base is None and stored.shape == (1, 10)
    batch_output[3] = 1.0  # the batch buffer changing later must not change the cached answer
    assert not stored.any()


def test_shrinking_the_budget_evicts_oldest_first():
    cache = ResultCache(max_bytes=10_000)
    for key in (b"a", b"b", b"c"):
        cache.put(key, result(100))
    cache.resize(2 * (400 + 1))
    assert cache.get(b"a") is None and cache.get(b"b") is not None and cache.get(b"c") is not None
    cache.resize(0)
    assert len(cache) == 0 and cache.bytes == 0


def test_entries_older_than_the_ttl_are_not_returned():
    now = [100.0]
    cache = ResultCache(max_bytes=10_000, ttl_s=5.0, clock=lambda: now[0])
    cache.put(b"k", result(4))
    now[0] = 104.0
    assert cache.get(b"k") is not None
    now[0] = 106.0
    assert cache.get(b"k") is None
    assert len(cache) == 0 and cache.bytes == 0 and cache.evictions == 1


def test_evictions_are_counted():
    cache = ResultCache(max_bytes=2 * (400 + 2))
    for key in (b"k1", b"k2", b"k3", b"k4"):
        cache.put(key, result(100))
    assert cache.evictions == 2 and len(cache) == 2


def test_a_non_positive_ttl_is_refused():
    with pytest.raises(ValueError, match="ttl_s: expected > 0"):
        ResultCache(100, ttl_s=0)


def strings(*texts):
    array = np.empty(len(texts), dtype=object)
    array[:] = texts
    return {"text": array}


def test_string_inputs_are_keyed_by_their_text_not_their_addresses():
    assert cache_key(SHA, "1", strings("a", "b"), ["embedding"]) == cache_key(SHA, "1", strings("a", "b"), ["embedding"])
    assert cache_key(SHA, "1", strings("a", "b"), ["embedding"]) != cache_key(SHA, "1", strings("ab", ""), ["embedding"])
    assert cache_key(SHA, "1", strings("a"), ["embedding"]) != cache_key(SHA, "1", strings("b"), ["embedding"])
