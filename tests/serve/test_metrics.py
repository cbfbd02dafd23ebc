"""ServeMetrics' tally: counter increments and gauge values reach Ray summed, once per flush (no Ray needed)."""

import asyncio

from serve.metrics import FLUSH_AFTER_S, ServeMetrics


class RecordingCounter:
    def __init__(self):
        self.calls = []

    def inc(self, value=1.0, tags=None):
        self.calls.append((value, tags))


class RecordingGauge:
    def __init__(self):
        self.values = []

    def set(self, value, tags=None):
        self.values.append(value)


class RecordingHistogram:
    def __init__(self):
        self.values = []

    def observe(self, value, tags=None):
        self.values.append(value)


def recorded_metrics() -> ServeMetrics:
    metrics = ServeMetrics("digits", "1")
    metrics.requests, metrics.cache_misses, metrics.cache_hits = RecordingCounter(), RecordingCounter(), RecordingCounter()
    metrics.rows, metrics.cache_evictions = RecordingCounter(), RecordingCounter()
    metrics.cache_bytes, metrics.queue_depth = RecordingGauge(), RecordingGauge()
    metrics.latency = metrics.batch_size = metrics.compute_time = metrics.queue_time = RecordingHistogram()
    return metrics


def test_on_the_event_loop_counts_are_summed_and_handed_over_once_after_the_flush_delay():
    metrics = recorded_metrics()

    async def scenario():
        for status in (200, 200, 503, 200):
            metrics.observe_request(status, 0.001, "miss")
        for hit in (False, True, False):
            metrics.observe_cache(hit)
        metrics.observe_cache_store(100, evicted=0)
        metrics.observe_cache_store(250, evicted=2)
        metrics.observe_batch(rows=3, queue_seconds=[0.1, 0.2, 0.3], compute_seconds=0.01, queue_depth=5)
        before = (list(metrics.requests.calls), list(metrics.cache_bytes.values))
        await asyncio.sleep(FLUSH_AFTER_S + 0.2)
        return before

    requests_before, bytes_before = asyncio.run(scenario())
    assert requests_before == [] and bytes_before == []  # nothing handed over before the flush
    assert sorted(metrics.requests.calls, key=str) == [(1, {"status": "503"}), (3, {"status": "200"})]
    assert metrics.cache_misses.calls == [(2, None)] and metrics.cache_hits.calls == [(1, None)]
    assert metrics.cache_evictions.calls == [(2, None)]
    assert metrics.cache_bytes.values == [250]  # the latest value only
    assert metrics.rows.calls == [(3, None)] and metrics.queue_depth.values == [5]
    # histograms are observed at once, one point per observation: latency x4, batch size, compute, queue x3
    assert len(metrics.latency.values) == 4 + 1 + 1 + 3


def test_off_the_event_loop_every_value_is_handed_over_at_once():
    metrics = recorded_metrics()
    metrics.observe_request(200, 0.001, "hit")
    metrics.observe_cache_store(10, evicted=0)
    assert metrics.requests.calls == [(1, {"status": "200"})]
    assert metrics.cache_bytes.values == [10]


def test_a_flush_with_nothing_tallied_hands_over_nothing():
    metrics = recorded_metrics()
    metrics.flush()
    assert metrics.requests.calls == [] and metrics.cache_bytes.values == []
