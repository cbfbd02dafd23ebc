"""InMemoryMetrics: the backend a pipeline built without Ray counts into, holding tags to what Ray would accept."""

import pytest

from serve.observability.backend import InMemoryMetrics


def test_counters_add_and_gauges_keep_their_latest_value_per_series():
    metrics = InMemoryMetrics()
    requests = metrics.counter("requests", "Requests.", ("model", "status"), {"model": "digits"})
    depth = metrics.gauge("depth", "Queue depth.", ("model",), {"model": "digits"})
    requests.inc(1, {"status": "200"})
    requests.inc(2, {"status": "200"})
    requests.inc(1, {"status": "503"})
    depth.set(5)
    depth.set(3)
    assert metrics.value("requests", model="digits", status="200") == 3
    assert metrics.value("requests", model="digits", status="503") == 1
    assert metrics.value("depth", model="digits") == 3
    assert metrics.value("requests", model="other", status="200") == 0


def test_a_value_without_every_tag_or_with_an_unknown_one_is_refused():
    metrics = InMemoryMetrics()
    requests = metrics.counter("requests", "Requests.", ("model", "status"), {"model": "digits"})
    with pytest.raises(ValueError, match=r"expected tags \['model', 'status'\], got \['model'\]"):
        requests.inc(1)
    with pytest.raises(ValueError, match="expected tags"):
        requests.inc(1, {"status": "200", "cache": "hit"})
    with pytest.raises(ValueError, match="not among its tag keys"):
        metrics.gauge("depth", "Queue depth.", ("model",), {"version": "1"})
