"""A dynamic batcher: merges concurrent requests into one model call.

Requests queue up; the batcher takes the oldest, waits at most `max_wait_s`
from its arrival for others to join, and runs one call over up to
`max_batch_size` rows. It waits only while `more_coming()` says requests have
reached the server but not yet the queue (their bodies are still being read
and checked): a lone request is never held back for company that isn't
there. Only requests whose non-batch shapes and dtypes match are merged.
While a batch computes (in a worker thread), new requests queue, so under
load batches fill without waiting. A model whose calls typically take less
than `inline_below_s` runs on the event loop instead: for such a model the
hop to the worker thread and back costs more CPU than the call itself. When a
call fails, or returns a batch dimension that does not match its inputs,
every request in it fails.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

Tensors = dict[str, np.ndarray]
RECENT_CALLS = 15
RunBatch = Callable[[Tensors], Tensors]


class BatchError(RuntimeError):
    """The model call for a batch failed or returned the wrong number of rows."""


class QueueFull(RuntimeError):
    """The queue holds max_queue requests already: back-pressure, the caller should retry later."""


class DeadlineExceeded(RuntimeError):
    """The request's deadline passed before its result was ready; it was not computed."""


def _signature(inputs: Tensors) -> tuple:
    return tuple(sorted((name, array.dtype.str, array.shape[1:]) for name, array in inputs.items()))


@dataclass
class _Pending:
    inputs: Tensors
    rows: int
    signature: tuple
    future: asyncio.Future
    deadline: float | None
    arrived: float = field(default_factory=time.monotonic)
    expiry: asyncio.TimerHandle | None = None  # fails the request at its deadline, until its batch is taken


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(DeadlineExceeded("deadline passed while the request waited for its batch"))


def _expire_wait(arrival: asyncio.Future) -> None:
    if not arrival.done():
        arrival.set_result(False)


class BatchObserver(Protocol):
    def observe_batch(self, rows: int, queue_seconds: list[float], compute_seconds: float, queue_depth: int) -> None:
        """Called after each model call: its rows, each request's wait in the queue, the call's time."""


class _Ignore:
    def observe_batch(self, rows, queue_seconds, compute_seconds, queue_depth) -> None:
        pass


class Batcher:
    def __init__(
        self,
        run_batch: RunBatch,
        max_batch_size: int,
        max_wait_s: float,
        observer: BatchObserver = _Ignore(),
        more_coming: Callable[[], bool] = lambda: True,
        max_queue: int = 1024,
        inline_below_s: float = 0.0,
    ) -> None:
        self._run_batch = run_batch
        self._inline_below_s = inline_below_s
        # the last calls' own times (without the hop); their median is robust to a call the OS preempted
        self._recent_calls: deque[float] = deque(maxlen=RECENT_CALLS)
        self.configure(max_batch_size, max_wait_s, max_queue)
        self._observer = observer
        self._more_coming = more_coming
        self._queue: deque[_Pending] = deque()
        self._arrival: asyncio.Future | None = None  # what the worker awaits for the next request, if it waits
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher")
        self._worker: asyncio.Task | None = None

    def configure(self, max_batch_size: int, max_wait_s: float, max_queue: int) -> None:
        """Change the limits; the next request and batch use them."""
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size: expected >= 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s: expected >= 0, got {max_wait_s}")
        if max_queue < 1:
            raise ValueError(f"max_queue: expected >= 1, got {max_queue}")
        self._max_rows = max_batch_size
        self._max_wait_s = max_wait_s
        self._max_queue = max_queue

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    async def submit(self, inputs: Tensors, deadline: float | None = None) -> Tensors:
        """Queue one request (all inputs share axis 0) and wait for its rows of the result.

        Raises QueueFull at once when max_queue requests wait already, and
        DeadlineExceeded when `deadline` (time.monotonic()) passes while it
        waits: a request whose deadline has passed is dropped before compute.
        Once its batch is taken, it is computed and answered even if its
        deadline passes meanwhile, so no computation is thrown away.
        """
        rows = {array.shape[0] for array in inputs.values()}
        if len(rows) != 1:
            raise ValueError(f"inputs: expected the same batch dimension for all, got {sorted(rows)}")
        if len(self._queue) >= self._max_queue:
            raise QueueFull(f"{len(self._queue)} requests already queued (max_queue {self._max_queue})")
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())
        loop = asyncio.get_running_loop()
        pending = _Pending(inputs, rows.pop(), _signature(inputs), loop.create_future(), deadline)
        self._queue.append(pending)
        if self._arrival is not None and not self._arrival.done():
            self._arrival.set_result(True)
        if deadline is None:
            return await pending.future
        # a timer per request, cheaper than asyncio.wait_for's task and waiter (this is the hot path)
        pending.expiry = loop.call_later(max(deadline - time.monotonic(), 0), _expire, pending.future)
        try:
            return await pending.future
        finally:
            pending.expiry.cancel()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:  # every queued caller gave up
                continue
            started = time.monotonic()
            try:
                merged = (batch[0].inputs if len(batch) == 1 else
                          {name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs})
                if self.runs_inline:
                    outputs, call_s = self._timed_call(merged)
                else:
                    outputs, call_s = await loop.run_in_executor(self._executor, self._timed_call, merged)
                self._recent_calls.append(call_s)
                self._deliver(batch, outputs)
            except Exception as error:  # every request in the batch gets the failure
                failure = error if isinstance(error, BatchError) else BatchError(f"model call failed: {error!r}")
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(failure)
            self._observer.observe_batch(
                sum(p.rows for p in batch), [started - p.arrived for p in batch],
                time.monotonic() - started, len(self._queue),
            )

    @property
    def runs_inline(self) -> bool:
        """Whether model calls now run on the event loop: the median of the last calls is under inline_below_s."""
        return bool(self._recent_calls) and statistics.median(self._recent_calls) < self._inline_below_s

    def _timed_call(self, merged: Tensors) -> tuple[Tensors, float]:
        started = time.perf_counter()
        outputs = self._run_batch(merged)
        return outputs, time.perf_counter() - started

    async def _next_batch(self) -> list[_Pending]:
        while not self._queue:
            await self._next_arrival(None)
        first = self._queue[0]
        deadline = first.arrived + self._max_wait_s
        while self._rows_like(first) < self._max_rows and self._more_coming():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await self._next_arrival(remaining):
                break
        return self._take_like(first)

    async def _next_arrival(self, timeout_s: float | None) -> bool:
        """Wait until the next request is queued (True) or `timeout_s` passes (False)."""
        loop = asyncio.get_running_loop()
        arrival = self._arrival = loop.create_future()
        timer = loop.call_later(timeout_s, _expire_wait, arrival) if timeout_s is not None else None
        try:
            return await arrival
        finally:
            self._arrival = None
            if timer is not None:
                timer.cancel()

    def _rows_like(self, first: _Pending) -> int:
        return sum(p.rows for p in self._queue if p.signature == first.signature and not p.future.done())

    def _take_like(self, first: _Pending) -> list[_Pending]:
        """Remove and return the oldest compatible requests, up to max rows (the first always)."""
        taken, kept, rows = [], deque(), 0
        now = time.monotonic()
        for pending in self._queue:
            if pending.future.done():  # the caller gave up (cancelled); drop it
                continue
            if pending.deadline is not None and now >= pending.deadline:
                pending.future.set_exception(DeadlineExceeded("deadline passed before the request was computed"))
                continue
            fits = pending.signature == first.signature and (not taken or rows + pending.rows <= self._max_rows)
            if fits:
                if pending.expiry is not None:  # computed from here on: its answer is worth more than a 504
                    pending.expiry.cancel()
                taken.append(pending)
                rows += pending.rows
            else:
                kept.append(pending)
        self._queue = kept
        return taken

    @staticmethod
    def _deliver(batch: list[_Pending], outputs: Tensors) -> None:
        total = sum(p.rows for p in batch)
        for name, array in outputs.items():
            if array.shape[:1] != (total,):
                raise BatchError(
                    f"output {name!r}: expected {total} rows for the batch, got shape {list(array.shape)}"
                )
        offset = 0
        for pending in batch:
            if not pending.future.done():
                end = offset + pending.rows
                pending.future.set_result({name: array[offset:end] for name, array in outputs.items()})
            offset += pending.rows
