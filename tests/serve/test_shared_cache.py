"""The Redis tier against a real redis-server, including Redis going away and coming back."""

import asyncio
import time

import numpy as np
import pytest

from serve.shared_cache import RedisTier, decode_result, encode_result
from tests.redis_server import REDIS_SERVER, RedisProcess

needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed (.ci/run installs it)")


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


@pytest.fixture
def redis_server():
    server = RedisProcess().start()
    yield server
    server.stop()


@needs_redis
def test_a_result_put_by_one_replica_is_found_by_another(redis_server):
    async def scenario():
        writer, reader = RedisTier(redis_server.url), RedisTier(redis_server.url)
        await writer.put(b"key-a", {"y": np.ones((1, 3), dtype=np.float32)})
        found, missing = await reader.get(b"key-a"), await reader.get(b"key-b")
        await writer.close()
        await reader.close()
        return found, missing

    found, missing = asyncio.run(scenario())
    np.testing.assert_array_equal(found["y"], np.ones((1, 3)))
    assert missing is None


@needs_redis
def test_entries_expire_after_the_ttl(redis_server):
    async def scenario():
        tier = RedisTier(redis_server.url, ttl_s=0.2)
        await tier.put(b"k", {"y": np.zeros(1, dtype=np.float32)})
        before = await tier.get(b"k")
        await asyncio.sleep(0.4)
        after = await tier.get(b"k")
        await tier.close()
        return before, after

    before, after = asyncio.run(scenario())
    assert before is not None and after is None


@needs_redis
def test_an_outage_is_a_fast_miss_then_the_tier_recovers(redis_server):
    async def scenario():
        tier = RedisTier(redis_server.url, timeout_s=0.05, retry_after_s=0.5)
        await tier.put(b"k", {"y": np.zeros(1, dtype=np.float32)})
        redis_server.stop()
        started = time.monotonic()
        during = [await tier.get(b"k") for _ in range(20)]  # one timeout, then resting: no waits
        await tier.put(b"k2", {"y": np.zeros(1, dtype=np.float32)})
        elapsed = time.monotonic() - started
        errors = tier.errors
        redis_server.start()
        await asyncio.sleep(0.6)
        await tier.put(b"k3", {"y": np.ones(1, dtype=np.float32)})
        recovered = await tier.get(b"k3")
        await tier.close()
        return during, elapsed, errors, recovered

    during, elapsed, errors, recovered = asyncio.run(scenario())
    assert during == [None] * 20
    assert elapsed < 1.0 and errors == 1
    assert recovered is not None and recovered["y"][0] == 1


@needs_redis
def test_every_failed_call_is_reported_writes_included(redis_server):
    """A write that fails (a background put after Redis went away) reaches the failure metric too."""
    failures = []

    async def scenario():
        tier = RedisTier(redis_server.url, timeout_s=0.05, retry_after_s=0.2, on_failure=lambda: failures.append(1))
        await tier.put(b"k", {"y": np.zeros(1, dtype=np.float32)})
        redis_server.stop()
        await tier.put(b"k2", {"y": np.zeros(1, dtype=np.float32)})  # fails: reported, then the tier rests
        resting_read = await tier.get(b"k")  # no call while resting: nothing to report
        await asyncio.sleep(0.25)
        failed_read = await tier.get(b"k")  # rested: tries again and fails
        redis_server.start()
        await tier.close()
        return resting_read, failed_read, tier.errors

    resting_read, failed_read, errors = asyncio.run(scenario())
    assert resting_read is None and failed_read is None
    assert len(failures) == errors == 2
