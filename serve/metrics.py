"""Prometheus metrics through Ray's metrics agent, so every replica is counted.

`ray.util.metrics` sends each replica's values to the metrics agent on its
node; Prometheus scrapes the agent (`ray start --metrics-export-port`, or
`ServeSettings.metrics_port` for the embedded server) and sees every replica's
series, whichever replica answered a request. Ray prefixes names with `ray_`:
`ray_optiserve_requests_total`, `ray_optiserve_request_latency_seconds_bucket`, ...
Ray reports a histogram's `_sum` from bucket midpoints, so it is approximate;
buckets and `_count` are exact, and `optiserve_inference_rows` counts rows exactly.
"""

from __future__ import annotations

LATENCY_BUCKETS_S = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
STAGE_BUCKETS_S = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]


class ServeMetrics:
    """The server's metrics for one model; create it inside the replica process."""

    def __init__(self, model: str, version: str) -> None:
        from ray.util import metrics

        tags = {"model": model, "version": version}
        self.requests = metrics.Counter(
            "optiserve_requests", "Inference requests answered, by model and HTTP status.",
            tag_keys=("model", "version", "status"),
        )
        self.requests.set_default_tags(tags)
        self.latency = metrics.Histogram(
            "optiserve_request_latency_seconds",
            "Time from request received to response ready, by where the answer came from (cache label).",
            boundaries=LATENCY_BUCKETS_S, tag_keys=("model", "version", "cache"),
        )
        self.batch_size = metrics.Histogram(
            "optiserve_batch_size", "Rows per model call formed by the dynamic batcher.",
            boundaries=BATCH_SIZE_BUCKETS, tag_keys=("model", "version"),
        )
        self.queue_time = metrics.Histogram(
            "optiserve_queue_seconds", "Time a request waited in the batcher's queue before its model call.",
            boundaries=STAGE_BUCKETS_S, tag_keys=("model", "version"),
        )
        self.compute_time = metrics.Histogram(
            "optiserve_compute_seconds", "Time of one batched model call.",
            boundaries=STAGE_BUCKETS_S, tag_keys=("model", "version"),
        )
        self.queue_depth = metrics.Gauge(
            "optiserve_queue_depth", "Requests waiting in the batcher's queue (per replica).", tag_keys=("model", "version"),
        )
        self.rows = metrics.Counter(
            "optiserve_inference_rows", "Rows the model computed (exact; Ray approximates histogram sums).",
            tag_keys=("model", "version"),
        )
        self.cache_hits = metrics.Counter("optiserve_cache_hits", "Result cache hits.", tag_keys=("model", "version"))
        self.cache_misses = metrics.Counter("optiserve_cache_misses", "Result cache misses.", tag_keys=("model", "version"))
        self.cache_evictions = metrics.Counter(
            "optiserve_cache_evictions", "Cached results dropped for room or age.", tag_keys=("model", "version")
        )
        self.cache_bytes = metrics.Gauge("optiserve_cache_bytes", "Bytes held by the result cache (per replica).",
                                         tag_keys=("model", "version"))
        self.coalesced = metrics.Counter(
            "optiserve_coalesced_requests", "Requests answered by an identical request's computation in flight.",
            tag_keys=("model", "version"),
        )
        self.shared_hits = metrics.Counter(
            "optiserve_cache_shared_hits", "Local cache misses answered by the shared (Redis) tier.",
            tag_keys=("model", "version"),
        )
        self.shared_errors = metrics.Counter(
            "optiserve_cache_shared_errors", "Shared-tier calls that failed or timed out (served as misses).",
            tag_keys=("model", "version"),
        )
        for metric in (self.shared_hits, self.shared_errors, self.cache_evictions, self.cache_bytes, self.coalesced, self.latency, self.batch_size, self.queue_time, self.compute_time, self.queue_depth, self.rows, self.cache_hits, self.cache_misses):
            metric.set_default_tags(tags)

    def observe_request(self, status: int, seconds: float, cache: str) -> None:
        self.requests.inc(1, {"status": str(status)})
        self.latency.observe(seconds, {"cache": cache})

    def observe_batch(self, rows: int, queue_seconds: list[float], compute_seconds: float, queue_depth: int) -> None:
        self.batch_size.observe(rows)
        self.rows.inc(rows)
        self.compute_time.observe(compute_seconds)
        for seconds in queue_seconds:
            self.queue_time.observe(seconds)
        self.queue_depth.set(queue_depth)

    def observe_cache(self, hit: bool) -> None:
        (self.cache_hits if hit else self.cache_misses).inc(1)

    def observe_cache_store(self, cached_bytes: int, evicted: int) -> None:
        self.cache_bytes.set(cached_bytes)
        if evicted:
            self.cache_evictions.inc(evicted)

    def observe_shared(self, hit: bool, failed: bool) -> None:
        if hit:
            self.shared_hits.inc(1)
        if failed:
            self.shared_errors.inc(1)

    def observe_coalesced(self) -> None:
        self.coalesced.inc(1)
