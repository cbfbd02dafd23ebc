import asyncio

import pytest

from serve.pipeline.batcher import DeadlineExceeded
from serve.pipeline.coalesce import Coalescer


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


def test_a_follower_gets_its_504_at_its_own_deadline_not_when_the_leader_finishes():
    async def slow_compute():
        await asyncio.sleep(0.5)
        return "leader's answer"

    async def scenario():
        coalescer = Coalescer()
        loop = asyncio.get_running_loop()
        leader = asyncio.ensure_future(coalescer.run(b"k", slow_compute, loop.time() + 5))
        await asyncio.sleep(0)
        started = loop.time()
        with pytest.raises(DeadlineExceeded, match="identical request in flight"):
            await coalescer.run(b"k", slow_compute, started + 0.05)
        waited = loop.time() - started
        return waited, await leader

    waited, leader = asyncio.run(scenario())
    assert waited < 0.4  # its own 50 ms deadline, not the leader's 500 ms computation
    assert leader == ("leader's answer", False)  # the leader is not disturbed


def test_a_follower_whose_deadline_passed_does_not_compute_after_the_leader_ran_out_of_time():
    calls = []

    async def leader_compute():
        await asyncio.sleep(0.05)
        raise DeadlineExceeded("leader's deadline")

    async def follower_compute():
        calls.append(1)
        return "too late"

    async def scenario():
        coalescer = Coalescer()
        leader = asyncio.ensure_future(coalescer.run(b"k", leader_compute))
        await asyncio.sleep(0)
        with pytest.raises(DeadlineExceeded):
            await coalescer.run(b"k", follower_compute, asyncio.get_running_loop().time() + 0.01)
        with pytest.raises(DeadlineExceeded):
            await leader

    asyncio.run(scenario())
    assert calls == []
