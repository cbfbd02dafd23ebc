"""The server's metrics for one model, tallied in the replica and handed to a metrics backend.

On Ray the backend is Ray's metrics API (serve/on_ray/metrics_backend.py): each replica's values go to the
metrics agent on its node; Prometheus scrapes the agent (`ray start --metrics-export-port`, or
`ServeSettings.metrics_port` for the embedded server) and sees every replica's series, whichever replica
answered a request. Ray prefixes names with `ray_`: `ray_optiserve_requests_total`,
`ray_optiserve_request_latency_seconds_bucket`, ...

Each Ray metric call costs a few microseconds of the replica's event loop, and a request made several.
Counter increments, gauge values and histogram observations are therefore tallied here and handed to the
backend together at most `FLUSH_AFTER_S` later (Ray itself pushes to its agent every
`metrics_report_interval_ms`). Histograms are counted in the replica and exported as their cumulative
`_bucket`, `_count` and `_sum` series (serve/observability/histogram.py): Ray's own Histogram costs its agent a
replay per observation, and approximates `_sum`; these sums are exact.
"""

from __future__ import annotations

import asyncio

from serve.observability.backend import MetricsBackend
from serve.observability.histogram import LocalHistogram

LATENCY_BUCKETS_S = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
FLUSH_AFTER_S = 0.5
INGRESS_WAIT_BUCKETS_S = [*LATENCY_BUCKETS_S, 10.0, 30.0, 60.0]  # HAProxy's queue timeout: the request timeout
STAGE_BUCKETS_S = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]


class ServeMetrics:
    """The server's metrics for one model, made by `backend` (on Ray: inside the replica process)."""

    def __init__(self, model: str, version: str, backend: MetricsBackend) -> None:
        self._tags = {"model": model, "version": version}
        self._backend = backend
        self._counts: dict[tuple, float] = {}  # (counter, extra tags as a tuple) -> increments not yet flushed
        self._gauges: dict[object, float] = {}  # gauge -> latest value not yet flushed
        self._flush_scheduled: asyncio.TimerHandle | None = None
        self._histograms: list[ExportedHistogram] = []  # every histogram made by _histogram, exported at each flush
        self.requests = self._counter("optiserve_requests", "Inference requests answered, by HTTP status.", "status")
        self.latency = self._histogram(
            "optiserve_request_latency_seconds",
            "Time from request received to response ready, by where the answer came from (cache label).",
            LATENCY_BUCKETS_S, "cache",
        )
        self.batch_size = self._histogram(
            "optiserve_batch_size", "Rows per model call formed by the dynamic batcher.", BATCH_SIZE_BUCKETS
        )
        self.queue_time = self._histogram(
            "optiserve_queue_seconds", "Time a request waited in the batcher's queue before its model call.",
            STAGE_BUCKETS_S,
        )
        self.ingress_wait = self._histogram(
            "optiserve_ingress_wait_seconds",
            "Time from the HAProxy ingress receiving a request to its replica receiving it (HAProxy's queue, where "
            "every replica holds max_ongoing_requests, included). Requests through another ingress are not counted.",
            INGRESS_WAIT_BUCKETS_S,
        )
        self.compute_time = self._histogram(
            "optiserve_compute_seconds", "Time of one batched model call.", STAGE_BUCKETS_S
        )
        self.queue_depth = self._gauge(
            "optiserve_queue_depth", "Requests waiting in the batcher's queue (per replica)."
        )
        self.rows = self._counter("optiserve_inference_rows", "Rows the model computed.")
        self.cache_hits = self._counter("optiserve_cache_hits", "Result cache hits.")
        self.cache_misses = self._counter("optiserve_cache_misses", "Result cache misses.")
        self.cache_evictions = self._counter("optiserve_cache_evictions", "Cached results dropped for room or age.")
        self.cache_bytes = self._gauge("optiserve_cache_bytes", "Bytes held by the result cache (per replica).")
        self.coalesced = self._counter(
            "optiserve_coalesced_requests", "Requests answered by an identical request's computation in flight."
        )
        self.shared_hits = self._counter(
            "optiserve_cache_shared_hits", "Local cache misses answered by the shared (Redis) tier."
        )
        self.shared_errors = self._counter(
            "optiserve_cache_shared_errors",
            "Shared-tier reads and writes that failed or timed out (reads are served as misses, writes dropped).",
        )
        self.shared_rejected = self._counter(
            "optiserve_cache_shared_rejected",
            "Shared-tier entries read back that did not fit the request (outputs, datatypes or shapes, truncated or "
            "garbled bytes): served as misses, never as answers.",
        )

    @property
    def histograms(self) -> tuple["ExportedHistogram", ...]:
        return tuple(self._histograms)

    def _counter(self, name: str, description: str, *extra: str):
        """Every metric carries the model and version; `extra` tags are given per observation."""
        return self._backend.counter(name, description, (*self._tags, *extra), self._tags)

    def _gauge(self, name: str, description: str):
        return self._backend.gauge(name, description, tuple(self._tags), self._tags)

    def _histogram(self, name: str, description: str, bounds: list[float], *extra: str) -> "ExportedHistogram":
        histogram = ExportedHistogram(self._backend, name, description, bounds, self._tags, extra)
        self._histograms.append(histogram)
        return histogram

    def observe_request(self, status: int, seconds: float, cache: str) -> None:
        self._count(self.requests, 1, ("status", str(status)))
        self.latency.local.observe(seconds, (cache,))  # flushed with the request count, scheduled just above

    def observe_ingress_wait(self, seconds: float) -> None:
        self.ingress_wait.local.observe(seconds)
        self._flush_soon()

    def observe_batch(self, rows: int, queue_seconds: list[float], compute_seconds: float, queue_depth: int) -> None:
        self.batch_size.local.observe(rows)
        self._count(self.rows, rows)
        self.compute_time.local.observe(compute_seconds)
        for seconds in queue_seconds:
            self.queue_time.local.observe(seconds)
        self._set(self.queue_depth, queue_depth)

    def observe_cache(self, hit: bool) -> None:
        self._count(self.cache_hits if hit else self.cache_misses, 1)

    def observe_cache_store(self, cached_bytes: int, evicted: int) -> None:
        self._set(self.cache_bytes, cached_bytes)
        if evicted:
            self._count(self.cache_evictions, evicted)

    def observe_shared_hit(self) -> None:
        self._count(self.shared_hits, 1)

    def observe_shared_failure(self) -> None:
        """A shared-tier read or write failed or timed out (reads then count as misses; writes are dropped)."""
        self._count(self.shared_errors, 1)

    def observe_shared_rejected(self) -> None:
        self._count(self.shared_rejected, 1)

    def observe_coalesced(self) -> None:
        self._count(self.coalesced, 1)

    def flush(self) -> None:
        """Hand every tallied increment, gauge value and histogram series to the backend now."""
        self._flush_scheduled = None
        counts, self._counts = self._counts, {}
        gauges, self._gauges = self._gauges, {}
        for (counter, extra), amount in counts.items():
            counter.inc(amount, dict([extra]) if extra else None)
        for gauge, value in gauges.items():
            gauge.set(value)
        for histogram in self._histograms:
            histogram.export()

    def _count(self, counter, amount: float, extra: tuple[str, str] | tuple = ()) -> None:
        key = (counter, extra)
        self._counts[key] = self._counts.get(key, 0) + amount
        self._flush_soon()

    def _set(self, gauge, value: float) -> None:
        self._gauges[gauge] = value
        self._flush_soon()

    def _flush_soon(self) -> None:
        """Flush FLUSH_AFTER_S from the first unflushed value; off the event loop, flush at once."""
        if self._flush_scheduled is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = loop.call_later(FLUSH_AFTER_S, self.flush)


class ExportedHistogram:
    """A LocalHistogram and the three gauges its series go out as: `_bucket` (with `le`), `_count`, `_sum`."""

    def __init__(self, backend: MetricsBackend, name: str, description: str, bounds: list[float],
                 tags: dict[str, str], extra: tuple[str, ...] = ()) -> None:
        self.local = LocalHistogram(bounds)
        self._extra = extra
        keys = (*tags, *extra)
        self.name, self.description, self.bounds, self.tag_keys = name, description, tuple(bounds), keys
        self._bucket = backend.gauge(f"{name}_bucket", f"{description} Observations at or under le, cumulative.",
                                     (*keys, "le"), tags)
        self._count = backend.gauge(f"{name}_count", f"{description} Observations.", keys, tags)
        self._sum = backend.gauge(f"{name}_sum", f"{description} Sum of observations.", keys, tags)

    def export(self) -> None:
        for extra, buckets, count, total in self.local.changed():
            tags = dict(zip(self._extra, extra))
            for le, cumulative in buckets:
                self._bucket.set(cumulative, {**tags, "le": le})
            self._count.set(count, tags or None)
            self._sum.set(total, tags or None)
