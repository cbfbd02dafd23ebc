import asyncio

import pytest

from serve.batcher import DeadlineExceeded
from serve.coalesce import Coalescer


def test_identical_requests_in_flight_are_computed_once():
    calls = []

    async def compute():
        calls.append(1)
        await asyncio.sleep(0.02)
        return "answer"

    async def scenario():
        coalescer = Coalescer()
        results = await asyncio.gather(*(coalescer.run(b"k", compute) for _ in range(5)))
        return results, len(coalescer)

    results, left = asyncio.run(scenario())
    assert len(calls) == 1
    assert [r for r, _ in results] == ["answer"] * 5
    assert sorted(c for _, c in results) == [False, True, True, True, True]
    assert left == 0


def test_different_keys_and_later_requests_compute_again():
    calls = []

    async def compute():
        calls.append(1)
        await asyncio.sleep(0)
        return len(calls)

    async def scenario():
        coalescer = Coalescer()
        await asyncio.gather(coalescer.run(b"a", compute), coalescer.run(b"b", compute))
        return await coalescer.run(b"a", compute)

    assert asyncio.run(scenario()) == (3, False) and len(calls) == 3


def test_followers_share_the_leaders_error():
    async def broken():
        await asyncio.sleep(0.01)
        raise ValueError("model failed")

    async def scenario():
        coalescer = Coalescer()
        return await asyncio.gather(*(coalescer.run(b"k", broken) for _ in range(3)), return_exceptions=True)

    assert all(isinstance(r, ValueError) for r in asyncio.run(scenario()))


def test_a_follower_computes_itself_when_the_leader_ran_out_of_time():
    async def leader_compute():
        await asyncio.sleep(0.01)
        raise DeadlineExceeded("leader's deadline")

    async def follower_compute():
        return "follower's own answer"

    async def scenario():
        coalescer = Coalescer()
        leader = asyncio.ensure_future(coalescer.run(b"k", leader_compute))
        await asyncio.sleep(0)
        follower = await coalescer.run(b"k", follower_compute)
        with pytest.raises(DeadlineExceeded):
            await leader
        return follower

    assert asyncio.run(scenario()) == ("follower's own answer", False)
