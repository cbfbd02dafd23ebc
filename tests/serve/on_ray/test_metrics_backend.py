"""ServeMetrics on Ray's metrics API (serve/on_ray/metrics_backend.py): every metric is made and every kind of
value handed over as a replica does (Ray checks each value's tags as it records it), so that a Ray that refuses a
name, tag or call fails here, not in a replica. What reaches Prometheus is checked end to end
(tests/e2e/test_server.py)."""

from serve.observability.metrics import ServeMetrics
from serve.on_ray.metrics_backend import RayMetrics


def test_every_metric_is_made_and_flushed_through_rays_metrics_api():
    metrics = ServeMetrics("digits", "1", RayMetrics())
    metrics.observe_request(200, 0.002, "miss")
    metrics.observe_ingress_wait(0.01)
    metrics.observe_batch(rows=2, queue_seconds=[0.001, 0.002], compute_seconds=0.003, queue_depth=1)
    metrics.observe_cache(hit=True)
    metrics.observe_cache_store(100, evicted=1)
    metrics.observe_shared_hit()
    metrics.observe_shared_failure()
    metrics.observe_shared_rejected()
    metrics.observe_coalesced()
    metrics.flush()
    assert type(metrics.requests).__module__.startswith("ray.util.metrics")
    assert type(metrics.latency._bucket).__module__.startswith("ray.util.metrics")
