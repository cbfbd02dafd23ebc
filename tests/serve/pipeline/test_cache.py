import numpy as np
import pytest

from optimize.manifest import Manifest, Measurement, TensorSpec, TextInput
from serve.pipeline.cache import ResultCache, answer_scope, cache_key, entry_bytes

SCOPE = "a" * 64
MEASURED = Measurement(accuracy=0.9, latency_ms={1: 0.1}, size_bytes=100)
MANIFEST = Manifest(
    name="minilm", version="1", sha256="0" * 64,
    inputs=(TensorSpec(name="input_ids", datatype="INT64", shape=(-1, -1)),
            TensorSpec(name="attention_mask", datatype="INT64", shape=(-1, -1))),
    outputs=(TensorSpec(name="embedding", datatype="FP32", shape=(-1, 384)),),
    text_input=TextInput(tokenizer_sha256="1" * 64, max_length=128),
    metric="cosine_to_fp32", steps=(), before=MEASURED, after=MEASURED, batch_deviation=0.0, machine="test",
    tool_versions={}, created_at="now",
)
CPU = "CPUExecutionProvider"


def inputs(value=1.0, dtype=np.float32, shape=(1, 4)):
    return {"input": np.full(shape, value, dtype=dtype)}


def test_identical_requests_share_a_key():
    assert cache_key(SCOPE, inputs(), ["logits"]) == cache_key(SCOPE, inputs(), ["logits"])


@pytest.mark.parametrize(
    "other",
    [
        lambda: cache_key("b" * 64, inputs(), ["logits"]),  # another model
        lambda: cache_key(SCOPE, inputs(2.0), ["logits"]),  # other values
        lambda: cache_key(SCOPE, inputs(dtype=np.float64), ["logits"]),  # other datatype
        lambda: cache_key(SCOPE, inputs(shape=(2, 2)), ["logits"]),  # same bytes, other shape
        lambda: cache_key(SCOPE, {"other": inputs()["input"]}, ["logits"]),  # other input name
        lambda: cache_key(SCOPE, inputs(), ["probabilities"]),  # other outputs asked for
    ],
)
def test_anything_that_changes_the_answer_changes_the_key(other):
    assert other() != cache_key(SCOPE, inputs(), ["logits"])


def test_output_order_does_not_matter():
    assert cache_key(SCOPE, inputs(), ["a", "b"]) == cache_key(SCOPE, inputs(), ["b", "a"])


def with_text(**changes) -> Manifest:
    return MANIFEST.model_copy(update={"text_input": MANIFEST.text_input.model_copy(update=changes)})


@pytest.mark.parametrize(
    "other",
    [
        lambda: answer_scope(MANIFEST.model_copy(update={"name": "minilm-b"}), CPU),  # same model file, other name
        lambda: answer_scope(MANIFEST.model_copy(update={"version": "2"}), CPU),
        lambda: answer_scope(MANIFEST.model_copy(update={"sha256": "2" * 64}), CPU),  # other model file
        lambda: answer_scope(with_text(tokenizer_sha256="3" * 64), CPU),  # same model, other tokenizer
        lambda: answer_scope(with_text(max_length=64), CPU),  # texts truncated elsewhere
        lambda: answer_scope(MANIFEST.model_copy(update={"runtime": "torchscript"}), CPU),
        lambda: answer_scope(MANIFEST, "CUDAExecutionProvider"),  # same artifact run on a GPU
        lambda: answer_scope(MANIFEST, "torch:cuda (torchscript, NVIDIA H100, bfloat16 autocast)"),
    ],
)
def test_artifacts_sharing_a_model_file_but_answering_differently_get_different_scopes(other):
    """Two artifacts that share model.onnx must not share cache entries (Redis is shared between models)."""
    scope = answer_scope(MANIFEST, CPU)
    assert other() != scope
    assert cache_key(other(), inputs(), ["embedding"]) != cache_key(scope, inputs(), ["embedding"])


def test_the_same_artifact_gets_the_same_scope_on_every_replica():
    reread = Manifest.model_validate_json(MANIFEST.model_dump_json(indent=2))  # as another replica reads it
    assert answer_scope(reread, CPU) == answer_scope(MANIFEST, CPU)


def result(n_floats):
    return {"logits": np.zeros(n_floats, dtype=np.float32)}


def size(key, n_floats):
    return entry_bytes(key, result(n_floats))


def test_get_returns_what_was_put_and_counts_bytes():
    cache = ResultCache(max_bytes=10_000)
    cache.put(b"k", result(10))
    assert cache.get(b"k")["logits"].shape == (10,)
    assert cache.get(b"missing") is None
    assert cache.bytes == size(b"k", 10)


def test_an_entry_counts_more_than_its_payload():
    """The key, the dict, the array objects and the slot cost memory too: 40 bytes of floats cost ~600."""
    counted = size(b"k" * 32, 10)
    assert counted >= 40 + 32 + 400, counted
    assert size(b"k" * 32, 20) - counted == 40  # each float more costs its 4 bytes, no more


def test_least_recently_used_entry_is_evicted_beyond_the_budget():
    cache = ResultCache(max_bytes=3 * size(b"k1", 100))
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
    assert len(cache) == 1 and cache.bytes == size(b"k", 20)


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
    cache.resize(2 * size(b"a", 100))
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
    cache = ResultCache(max_bytes=2 * size(b"k1", 100))
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
    assert cache_key(SCOPE, strings("a", "b"), ["embedding"]) == cache_key(SCOPE, strings("a", "b"), ["embedding"])
    assert cache_key(SCOPE, strings("a", "b"), ["embedding"]) != cache_key(SCOPE, strings("ab", ""), ["embedding"])
    assert cache_key(SCOPE, strings("a"), ["embedding"]) != cache_key(SCOPE, strings("b"), ["embedding"])
