"""The batcher on plain asyncio, no Ray."""

import asyncio
import threading
import time

import numpy as np
import pytest

from serve.pipeline.batcher import BatchError, Batcher, DeadlineExceeded, QueueFull


class Recorder:
    """A model that doubles its input and records the batch sizes it saw."""

    def __init__(self):
        self.batches: list[int] = []

    def __call__(self, inputs):
        self.batches.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}


class Observed:
    def __init__(self):
        self.calls = []

    def observe_batch(self, rows, queue_seconds, compute_seconds, queue_depth):
        self.calls.append((rows, queue_seconds, compute_seconds, queue_depth))


def rows(values, width=4):
    return {"x": np.array([[v] * width for v in values], dtype=np.float32)}


async def _submit_all(batcher, requests):
    return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)


def submit_together(model, requests, **batcher_options) -> list:
    """Submit all requests at once to a fresh batcher; each result, or the exception it raised."""
    async def scenario():
        batcher = Batcher(model, **batcher_options)
        try:
            return await _submit_all(batcher, requests)
        finally:
            batcher.close()

    return asyncio.run(scenario())


def test_concurrent_requests_share_one_call_and_each_gets_its_own_rows():
    model = Recorder()
    results = submit_together(model, [rows([i]) for i in range(5)], max_batch_size=8, max_wait_s=0.05)
    assert model.batches == [5]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], rows([i])["x"] * 2)


def test_batches_never_exceed_max_batch_size_in_rows():
    model = Recorder()
    results = submit_together(model, [rows([i, i + 100]) for i in range(7)], max_batch_size=4, max_wait_s=0.01)
    assert all(size <= 4 for size in model.batches) and sum(model.batches) == 14
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"][:, 0], [2 * i, 2 * (i + 100)])


def test_a_request_larger_than_max_runs_alone():
    model = Recorder()
    (result,) = submit_together(model, [rows(range(5))], max_batch_size=2, max_wait_s=0.0)
    assert model.batches == [5] and result["y"].shape == (5, 4)


def test_inputs_with_different_non_batch_shapes_are_never_merged():
    model = Recorder()
    requests = [rows([1], width=4), rows([2], width=3), rows([3], width=4), rows([4], width=3)]
    results = submit_together(model, requests, max_batch_size=16, max_wait_s=0.02)
    assert sorted(model.batches) == [2, 2]
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)


def test_with_no_wait_a_lone_request_is_not_held_back():
    model = Recorder()

    async def scenario():
        batcher = Batcher(model, max_batch_size=32, max_wait_s=0.0)
        result = await asyncio.wait_for(batcher.submit(rows([7])), timeout=1.0)
        batcher.close()
        return result

    assert asyncio.run(scenario())["y"][0, 0] == 14


def test_a_failing_model_call_fails_every_request_in_the_batch():
    def broken(inputs):
        raise RuntimeError("boom")

    results = submit_together(broken, [rows([i]) for i in range(3)], max_batch_size=8, max_wait_s=0.02)
    assert all(isinstance(r, BatchError) and "boom" in str(r) for r in results)


def test_outputs_that_do_not_match_inputs_in_length_fail_the_batch():
    def one_row_short(inputs):
        return {"y": inputs["x"][:1]}

    results = submit_together(one_row_short, [rows([i]) for i in range(3)], max_batch_size=8, max_wait_s=0.02)
    assert all(isinstance(r, BatchError) and "expected 3 rows" in str(r) for r in results)


def test_the_batcher_keeps_serving_after_a_failed_batch():
    calls = []

    def flaky(inputs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return {"y": inputs["x"] + 1}

    async def scenario():
        batcher = Batcher(flaky, max_batch_size=8, max_wait_s=0.0)
        first = await _submit_all(batcher, [rows([1])])
        second = await batcher.submit(rows([1]))
        batcher.close()
        return first, second

    first, second = asyncio.run(scenario())
    assert isinstance(first[0], BatchError) and second["y"][0, 0] == 2


def test_a_cancelled_caller_does_not_disturb_the_others():
    model = Recorder()

    async def scenario():
        batcher = Batcher(model, max_batch_size=8, max_wait_s=0.05)
        doomed = asyncio.ensure_future(batcher.submit(rows([1])))
        kept = asyncio.ensure_future(batcher.submit(rows([2])))
        await asyncio.sleep(0)
        doomed.cancel()
        result = await kept
        batcher.close()
        return result

    assert asyncio.run(scenario())["y"][0, 0] == 4
    assert model.batches == [1]


@pytest.mark.parametrize("size, wait", [(0, 0.0), (4, -1.0)])
def test_settings_are_checked_up_front(size, wait):
    with pytest.raises(ValueError, match="expected"):
        Batcher(Recorder(), max_batch_size=size, max_wait_s=wait)


def test_inputs_must_agree_on_batch_dimension():
    async def scenario():
        batcher = Batcher(Recorder(), max_batch_size=8, max_wait_s=0.0)
        try:
            await batcher.submit({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))})
        finally:
            batcher.close()

    with pytest.raises(ValueError, match="same batch dimension"):
        asyncio.run(scenario())


def test_a_lone_request_is_not_held_back_when_nothing_else_is_arriving():
    model = Recorder()

    async def scenario():
        batcher = Batcher(model, max_batch_size=32, max_wait_s=5.0, more_coming=lambda: False)
        result = await asyncio.wait_for(batcher.submit(rows([7])), timeout=1.0)
        batcher.close()
        return result

    assert asyncio.run(scenario())["y"][0, 0] == 14


def test_requests_still_arriving_are_waited_for():
    model = Recorder()
    arriving = {"count": 2}

    async def late(batcher, value, delay):
        await asyncio.sleep(delay)
        arriving["count"] -= 1
        return await batcher.submit(rows([value]))

    async def scenario():
        batcher = Batcher(model, max_batch_size=32, max_wait_s=1.0, more_coming=lambda: arriving["count"] > 0)
        results = await asyncio.gather(batcher.submit(rows([0])), late(batcher, 1, 0.01), late(batcher, 2, 0.02))
        batcher.close()
        return results

    results = asyncio.run(scenario())
    assert model.batches == [3]
    assert [r["y"][0, 0] for r in results] == [0, 2, 4]


def test_the_observer_sees_rows_queue_waits_and_compute_time():
    observer = Observed()

    def slow(inputs):
        time.sleep(0.02)
        return {"y": inputs["x"]}

    async def scenario():
        batcher = Batcher(slow, max_batch_size=2, max_wait_s=0.0, observer=observer)
        await _submit_all(batcher, [rows([i]) for i in range(4)])
        batcher.close()

    asyncio.run(scenario())
    assert sum(rows for rows, *_ in observer.calls) == 4
    assert all(len(waits) == rows for rows, waits, _, _ in observer.calls)
    assert all(compute >= 0.02 for _, _, compute, _ in observer.calls)
    assert max(max(waits) for _, waits, _, _ in observer.calls) >= 0.02  # later requests queued behind a call


def test_reconfigure_changes_the_batch_limit_for_the_next_batch():
    model = Recorder()

    async def scenario():
        batcher = Batcher(model, max_batch_size=8, max_wait_s=0.02)
        await _submit_all(batcher, [rows([i]) for i in range(6)])
        batcher.configure(max_batch_size=2, max_wait_s=0.02, max_queue=64)
        await _submit_all(batcher, [rows([i]) for i in range(6)])
        batcher.close()

    asyncio.run(scenario())
    assert model.batches[0] == 6 and model.batches[1:] == [2, 2, 2]


def test_a_full_queue_rejects_at_once_and_loses_nothing_already_queued():
    release = threading.Event()

    def blocked(inputs):
        release.wait(5)
        return {"y": inputs["x"]}

    async def scenario():
        batcher = Batcher(blocked, max_batch_size=1, max_wait_s=0.0, max_queue=2)
        first = asyncio.ensure_future(batcher.submit(rows([0])))
        await asyncio.sleep(0.05)  # first is computing; the queue is empty again
        queued = [asyncio.ensure_future(batcher.submit(rows([i]))) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="max_queue 2"):
            await batcher.submit(rows([3]))
        release.set()
        results = await asyncio.gather(first, *queued)
        batcher.close()
        return results

    assert [r["y"][0, 0] for r in asyncio.run(scenario())] == [0, 1, 2]


def test_an_expired_request_is_dropped_before_compute():
    model = Recorder()
    release = threading.Event()

    def slow_first(inputs):
        release.wait(5)
        return model(inputs)

    async def scenario():
        batcher = Batcher(slow_first, max_batch_size=1, max_wait_s=0.0)
        first = asyncio.ensure_future(batcher.submit(rows([0])))
        await asyncio.sleep(0.02)
        doomed = asyncio.ensure_future(batcher.submit(rows([1]), deadline=time.monotonic() + 0.05))
        await asyncio.sleep(0.1)  # the deadline passes while the first batch computes
        release.set()
        results = await asyncio.gather(first, doomed, return_exceptions=True)
        batcher.close()
        return results

    first, doomed = asyncio.run(scenario())
    assert first["y"][0, 0] == 0
    assert isinstance(doomed, DeadlineExceeded)
    assert model.batches == [1], "the expired request must never reach the model"


def test_a_request_whose_deadline_passes_while_its_batch_computes_gets_its_answer():
    """Its computation is done: answering it beats a 504 that throws the work away."""
    model = ThreadRecorder(seconds=0.2)

    async def scenario():
        batcher = Batcher(model, max_batch_size=4, max_wait_s=0.0)
        try:
            return await batcher.submit(rows([3]), deadline=time.monotonic() + 0.05)
        finally:
            batcher.close()

    assert asyncio.run(scenario())["y"][0, 0] == 6 and len(model.threads) == 1


def test_a_request_with_time_left_is_computed():
    async def scenario():
        batcher = Batcher(Recorder(), max_batch_size=4, max_wait_s=0.0)
        result = await batcher.submit(rows([3]), deadline=time.monotonic() + 5)
        batcher.close()
        return result

    assert asyncio.run(scenario())["y"][0, 0] == 6


class ThreadRecorder:
    """A model that sleeps `seconds` per call and records which thread ran each call."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.threads: list[str] = []

    def __call__(self, inputs):
        self.threads.append(threading.current_thread().name)
        time.sleep(self.seconds)
        return {"y": inputs["x"] * 2}


def run_one_at_a_time(model, calls: int, **batcher_options):
    async def scenario():
        batcher = Batcher(model, max_batch_size=4, max_wait_s=0.0, **batcher_options)
        try:
            results = [await batcher.submit(rows([i])) for i in range(calls)]
            return results, batcher.runs_inline, threading.current_thread().name
        finally:
            batcher.close()

    return asyncio.run(scenario())


def test_a_model_faster_than_the_threshold_moves_onto_the_event_loop_after_its_first_call():
    model = ThreadRecorder(seconds=0.0)
    results, inline, loop_thread = run_one_at_a_time(model, 4, inline_below_s=0.05)
    assert inline
    assert model.threads[0].startswith("batcher")  # measured first, in the worker thread
    assert model.threads[1:] == [loop_thread] * 3
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], rows([i])["x"] * 2)


def test_a_model_slower_than_the_threshold_stays_in_the_worker_thread():
    model = ThreadRecorder(seconds=0.01)
    _, inline, _ = run_one_at_a_time(model, 3, inline_below_s=0.001)
    assert not inline
    assert all(name.startswith("batcher") for name in model.threads)


def test_inline_calls_are_off_by_default():
    model = ThreadRecorder(seconds=0.0)
    _, inline, _ = run_one_at_a_time(model, 3)
    assert not inline
    assert all(name.startswith("batcher") for name in model.threads)


def test_a_failing_inline_call_fails_its_requests_and_the_batcher_goes_on():
    calls = {"n": 0}

    def fails_third(inputs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return {"y": inputs["x"]}

    async def scenario():
        batcher = Batcher(fails_third, max_batch_size=4, max_wait_s=0.0, inline_below_s=1.0)
        try:
            outcomes = []
            for i in range(4):
                try:
                    outcomes.append(await batcher.submit(rows([i])))
                except BatchError as error:
                    outcomes.append(error)
            return outcomes
        finally:
            batcher.close()

    outcomes = asyncio.run(scenario())
    assert isinstance(outcomes[2], BatchError) and "boom" in str(outcomes[2])
    assert [isinstance(o, dict) for o in outcomes] == [True, True, False, True]
