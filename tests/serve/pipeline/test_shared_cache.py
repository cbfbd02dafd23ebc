"""The Redis tier against a real redis-server, including Redis going away and coming back."""

import asyncio
import json
import time

import numpy as np
import pytest
import redis

from optimize.manifest import TensorSpec
from serve.pipeline.shared_cache import PREFIX, RedisTier, check_result, decode_result, encode_result
from tests.redis_server import RedisProcess, needs_redis

Y = (TensorSpec(name="y", datatype="FP32", shape=(-1, 3)),)  # the model's outputs in most tests: y, [rows, 3]
ONE_ROW = {"y": np.zeros((1, 3), dtype=np.float32)}
# Tests that are not about timeouts give Redis 2 s a call, not the 50 ms default: on a loaded 2-core machine a
# healthy call to a local Redis has taken longer than 50 ms, and the tier then rests as after an outage.
PATIENT_S = 2.0


def test_results_round_trip_without_pickle():
    result = {"logits": np.arange(20, dtype=np.float32).reshape(2, 10), "ids": np.array([[1, 2]], dtype=np.int64)}
    decoded = decode_result(encode_result(result))
    assert set(decoded) == {"logits", "ids"}
    for name in result:
        np.testing.assert_array_equal(decoded[name], result[name])
        assert decoded[name].dtype == result[name].dtype


def test_a_truncated_entry_is_refused():
    with pytest.raises(ValueError, match="expected"):
        decode_result(encode_result({"x": np.zeros(4, dtype=np.float32)})[:-3])


TWO = (TensorSpec(name="logits", datatype="FP32", shape=(-1, 10)),
       TensorSpec(name="ids", datatype="INT64", shape=(-1, -1)))
RIGHT = {"logits": np.zeros((2, 10), dtype=np.float32), "ids": np.zeros((2, 5), dtype=np.int64)}
WRONG = {
    "an output missing": {"logits": RIGHT["logits"]},
    "an output more": {**RIGHT, "extra": np.zeros((2, 1), dtype=np.float32)},
    "another output name": {"scores": RIGHT["logits"], "ids": RIGHT["ids"]},
    "another datatype": {**RIGHT, "logits": np.zeros((2, 10), dtype=np.float64)},
    "big-endian floats": {**RIGHT, "logits": np.zeros((2, 10), dtype=">f4")},
    "another non-batch dimension": {**RIGHT, "logits": np.zeros((2, 9), dtype=np.float32)},
    "other rows than the request": {**RIGHT, "logits": np.zeros((3, 10), dtype=np.float32)},
    "a dimension fewer": {**RIGHT, "logits": np.zeros(20, dtype=np.float32)},
    "a dimension more": {**RIGHT, "ids": np.zeros((2, 5, 1), dtype=np.int64)},
}


def test_a_result_that_fits_the_request_passes_the_check():
    check_result(RIGHT, TWO, rows=2)  # ids' second dimension is dynamic: any length fits
    check_result({**RIGHT, "ids": np.zeros((2, 7), dtype=np.int64)}, TWO, rows=2)


@pytest.mark.parametrize("result", WRONG.values(), ids=WRONG.keys())
def test_a_result_that_does_not_fit_the_request_is_refused_saying_what_was_expected(result):
    with pytest.raises(ValueError, match="cached result: .*expected"):
        check_result(result, TWO, rows=2)


@pytest.fixture
def redis_server():
    server = RedisProcess().start()
    yield server
    server.stop()


@needs_redis
def test_a_result_put_by_one_replica_is_found_by_another(redis_server):
    async def scenario():
        writer, reader = RedisTier(redis_server.url, Y, PATIENT_S), RedisTier(redis_server.url, Y, PATIENT_S)
        await writer.put(b"key-a", {"y": np.ones((1, 3), dtype=np.float32)})
        found, missing = await reader.get(b"key-a", ["y"], 1), await reader.get(b"key-b", ["y"], 1)
        await writer.close()
        await reader.close()
        return found, missing

    found, missing = asyncio.run(scenario())
    np.testing.assert_array_equal(found["y"], np.ones((1, 3)))
    assert missing is None


@needs_redis
def test_entries_expire_after_the_ttl(redis_server):
    async def scenario():
        tier = RedisTier(redis_server.url, Y, PATIENT_S, ttl_s=0.2)
        await tier.put(b"k", ONE_ROW)
        before = await tier.get(b"k", ["y"], 1)
        await asyncio.sleep(0.4)
        after = await tier.get(b"k", ["y"], 1)
        await tier.close()
        return before, after

    before, after = asyncio.run(scenario())
    assert before is not None and after is None


@needs_redis
def test_an_outage_is_a_fast_miss_then_the_tier_recovers(redis_server):
    async def scenario():
        tier = RedisTier(redis_server.url, Y, timeout_s=0.05, retry_after_s=0.5)
        await tier.put(b"k", ONE_ROW)
        redis_server.stop()
        started = time.monotonic()
        during = [await tier.get(b"k", ["y"], 1) for _ in range(20)]  # one timeout, then resting: no waits
        await tier.put(b"k2", ONE_ROW)
        elapsed = time.monotonic() - started
        errors = tier.errors
        redis_server.start()
        await asyncio.sleep(0.6)
        await tier.put(b"k3", {"y": np.ones((1, 3), dtype=np.float32)})
        recovered = await tier.get(b"k3", ["y"], 1)
        await tier.close()
        return during, elapsed, errors, recovered

    during, elapsed, errors, recovered = asyncio.run(scenario())
    assert during == [None] * 20
    assert elapsed < 1.0 and errors == 1
    assert recovered is not None and recovered["y"][0, 0] == 1


@needs_redis
def test_every_failed_call_is_reported_writes_included(redis_server):
    """A write that fails (a background put after Redis went away) reaches the failure metric too."""
    failures = []

    async def scenario():
        tier = RedisTier(redis_server.url, Y, timeout_s=0.05, retry_after_s=0.2,
                         on_failure=lambda: failures.append(1))
        await tier.put(b"k", ONE_ROW)
        redis_server.stop()
        await tier.put(b"k2", ONE_ROW)  # fails: reported, then the tier rests
        resting_read = await tier.get(b"k", ["y"], 1)  # no call while resting: nothing to report
        await asyncio.sleep(0.25)
        failed_read = await tier.get(b"k", ["y"], 1)  # rested: tries again and fails
        redis_server.start()
        await tier.close()
        return resting_read, failed_read, tier.errors

    resting_read, failed_read, errors = asyncio.run(scenario())
    assert resting_read is None and failed_read is None
    assert len(failures) == errors == 2


def with_header(header: list) -> bytes:
    """RIGHT's bytes under another header."""
    payload = b"".join(array.tobytes() for array in RIGHT.values())
    encoded = json.dumps(header).encode()
    return len(encoded).to_bytes(4, "little") + encoded + payload


POISON = {
    **{name: encode_result(result) for name, result in WRONG.items()},
    "truncated": encode_result(RIGHT)[:-3],
    "a byte more": encode_result(RIGHT) + b"\0",
    "garbage": b"\xff" * 64,
    "header not JSON": (5).to_bytes(4, "little") + b"{oops" + bytes(80),
    "header of another form": (9).to_bytes(4, "little") + b'{"a": 1}' + b" ",
    "a negative dimension": with_header([["logits", "<f4", [-2, -10]], ["ids", "<i8", [2, 5]]]),
    "a -1 dimension": with_header([["logits", "<f4", [-1, 10]], ["ids", "<i8", [2, 5]]]),
    "a fractional dimension": with_header([["logits", "<f4", [2.0, 10]], ["ids", "<i8", [2, 5]]]),
    "an output twice": with_header([["logits", "<f4", [2, 10]], ["logits", "<i8", [2, 5]]]),
    "an object array": with_header([["logits", "|O", [2, 10]], ["ids", "<i8", [2, 5]]]),
    "a shape past any memory": with_header([["logits", "<f4", [2, 10**30]], ["ids", "<i8", [2, 5]]]),
    "empty": b"",
}


@needs_redis
def test_a_poisoned_entry_is_a_counted_miss_and_the_answer_replaces_it(redis_server):
    """Entries in Redis come from outside this replica (another version, another deployment, anyone who can
    write to it): one that does not fit is a miss and counted, never an answer or an error, and the tier
    does not rest (Redis works). The replica's computed answer then overwrites it."""
    raw = redis.Redis.from_url(redis_server.url)
    for index, poison in enumerate(POISON.values()):
        raw.set(PREFIX + b"poisoned-%d" % index, poison)
    rejected = []

    async def scenario():
        tier = RedisTier(redis_server.url, TWO, PATIENT_S, on_rejected=lambda: rejected.append(1))
        misses = [await tier.get(b"poisoned-%d" % index, ["logits", "ids"], 2) for index in range(len(POISON))]
        await tier.put(b"poisoned-0", RIGHT)
        replaced = await tier.get(b"poisoned-0", ["logits", "ids"], 2)
        await tier.close()
        return misses, replaced, tier

    misses, replaced, tier = asyncio.run(scenario())
    raw.close()
    assert misses == [None] * len(POISON)
    assert tier.rejected == len(rejected) == len(POISON) and tier.errors == 0 and tier.available
    assert replaced is not None and replaced["logits"].shape == (2, 10)


@needs_redis
def test_an_entry_is_checked_against_the_outputs_this_request_asked_for(redis_server):
    """The key covers the outputs asked for; the check does too, so an entry for both outputs is no answer
    to a request for one of them, nor an entry of two rows to a request of one."""
    rejected = []

    async def scenario():
        tier = RedisTier(redis_server.url, TWO, PATIENT_S, on_rejected=lambda: rejected.append(1))
        await tier.put(b"k", RIGHT)
        found = [await tier.get(b"k", names, rows) for names, rows in
                 ((["logits", "ids"], 2), (["ids", "logits"], 2), (["logits"], 2), (["logits", "ids"], 1))]
        await tier.close()
        return found

    both, reordered, one_output, one_row = asyncio.run(scenario())
    assert both is not None and reordered is not None
    assert one_output is None and one_row is None and len(rejected) == 2
