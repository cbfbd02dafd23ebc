"""ServeMetrics' tally: counters, gauges and histogram series reach the backend summed, once per flush."""

import asyncio

import pytest

from serve.observability.metrics import FLUSH_AFTER_S, ServeMetrics


class RecordingCounter:
    def __init__(self):
        self.calls = []

    def inc(self, value=1.0, tags=None):
        self.calls.append((value, tags))


class RecordingGauge:
    def __init__(self):
        self.calls = []

    def set(self, value, tags=None):
        self.calls.append((value, tags))

    @property
    def values(self):
        return [value for value, _ in self.calls]


class RecordingBackend:
    """Makes recording metrics; remembers each one's name, tag keys and default tags."""

    def __init__(self):
        self.made = {}

    def counter(self, name, description, tag_keys, default_tags):
        self.made[name] = (tag_keys, default_tags)
        return RecordingCounter()

    def gauge(self, name, description, tag_keys, default_tags):
        self.made[name] = (tag_keys, default_tags)
        return RecordingGauge()


def recorded_metrics() -> ServeMetrics:
    return ServeMetrics("digits", "1", RecordingBackend())


def test_every_metric_carries_the_model_and_version_and_names_its_own_tags():
    backend = RecordingBackend()
    ServeMetrics("digits", "1", backend)
    model = ("model", "version")
    assert all(keys[:2] == model and defaults == {"model": "digits", "version": "1"}
               for keys, defaults in backend.made.values())
    assert backend.made["optiserve_requests"][0] == (*model, "status")
    assert backend.made["optiserve_request_latency_seconds_bucket"][0] == (*model, "cache", "le")
    assert backend.made["optiserve_request_latency_seconds_sum"][0] == (*model, "cache")
    assert backend.made["optiserve_queue_depth"][0] == model


def test_on_the_event_loop_values_are_summed_and_handed_over_once_after_the_flush_delay():
    metrics = recorded_metrics()

    async def scenario():
        for status in (200, 200, 503, 200):
            metrics.observe_ingress_wait(0.03)
            metrics.observe_request(status, 0.002, "miss")
        for hit in (False, True, False):
            metrics.observe_cache(hit)
        metrics.observe_cache_store(100, evicted=0)
        metrics.observe_cache_store(250, evicted=2)
        metrics.observe_batch(rows=3, queue_seconds=[0.1, 0.2, 0.3], compute_seconds=0.01, queue_depth=5)
        before = (list(metrics.requests.calls), list(metrics.cache_bytes.calls), list(metrics.latency._count.calls))
        await asyncio.sleep(FLUSH_AFTER_S + 0.2)
        return before

    assert asyncio.run(scenario()) == ([], [], [])  # nothing handed over before the flush
    assert sorted(metrics.requests.calls, key=str) == [(1, {"status": "503"}), (3, {"status": "200"})]
    assert metrics.cache_misses.calls == [(2, None)] and metrics.cache_hits.calls == [(1, None)]
    assert metrics.cache_evictions.calls == [(2, None)]
    assert metrics.cache_bytes.values == [250]  # the latest value only
    assert metrics.rows.calls == [(3, None)] and metrics.queue_depth.values == [5]
    # histograms: one cumulative series per label value, named as Prometheus names a histogram's parts
    assert metrics.latency._count.calls == [(4, {"cache": "miss"})]
    assert metrics.ingress_wait._count.calls == [(4, None)] and metrics.ingress_wait._sum.values == [pytest.approx(0.12)]
    assert metrics.latency._sum.values == [0.008]
    buckets = {tags["le"]: value for value, tags in metrics.latency._bucket.calls}
    assert buckets["0.001"] == 0 and buckets["0.0025"] == 4 and buckets["+Inf"] == 4
    assert metrics.queue_time._count.values == [3] and metrics.batch_size._count.values == [1]
    assert {tags["le"]: value for value, tags in metrics.batch_size._bucket.calls}["2.0"] == 0


def test_off_the_event_loop_every_value_is_handed_over_at_once():
    metrics = recorded_metrics()
    metrics.observe_request(200, 0.001, "hit")
    metrics.observe_cache_store(10, evicted=0)
    assert metrics.requests.calls == [(1, {"status": "200"})]
    assert metrics.cache_bytes.values == [10]
    assert metrics.latency._count.calls == [(1, {"cache": "hit"})]


def test_a_flush_with_nothing_tallied_hands_over_nothing():
    metrics = recorded_metrics()
    metrics.flush()
    assert metrics.requests.calls == [] and metrics.cache_bytes.values == [] and metrics.latency._count.calls == []
