"""Identical requests in flight at the same time are computed once."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Generic, TypeVar

from serve.pipeline.batcher import DeadlineExceeded

T = TypeVar("T")


class Coalescer(Generic[T]):
    """The first caller with a key computes; callers with the same key meanwhile wait for its result.

    A follower gets the leader's result or error, except when the leader ran
    out of its own deadline or was cancelled: then the follower computes for
    itself, since its own deadline may be later. A follower keeps its own
    deadline too: if it passes while the leader is still computing, the
    follower gets DeadlineExceeded then, and the leader goes on.
    """

    def __init__(self) -> None:
        self._in_flight: dict[bytes, asyncio.Future] = {}

    def __len__(self) -> int:
        return len(self._in_flight)

    async def run(self, key: bytes, compute: Callable[[], Awaitable[T]],
                  deadline: float | None = None) -> tuple[T, bool]:
        """Return (result, coalesced) where coalesced says another caller's computation was reused.

        `deadline` (time.monotonic()) bounds how long this caller waits for another's computation.
        """
        leader = self._in_flight.get(key)
        if leader is not None:
            try:
                return await self._follow(leader, deadline), True
            except (DeadlineExceeded, asyncio.CancelledError):
                if asyncio.current_task().cancelling() or _passed(deadline):
                    raise
        return await self._lead(key, compute), False

    @staticmethod
    async def _follow(leader: asyncio.Future, deadline: float | None) -> T:
        if deadline is None:
            return await asyncio.shield(leader)
        try:
            return await asyncio.wait_for(asyncio.shield(leader), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise DeadlineExceeded("deadline passed while waiting for an identical request in flight") from None

    async def _lead(self, key: bytes, compute: Callable[[], Awaitable[T]]) -> T:
        future = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            result = await compute()
        except Exception as error:
            future.set_exception(error)
            future.exception()  # followers may be none: mark it retrieved
            raise
        except BaseException:  # cancelled: followers compute for themselves
            future.cancel()
            raise
        else:
            future.set_result(result)
            return result
        finally:
            if self._in_flight.get(key) is future:
                del self._in_flight[key]


def _passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
