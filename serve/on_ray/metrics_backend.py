"""ServeMetrics' backend on Ray (serve/observability/backend.py): Ray's metrics API, `ray.util.metrics`.

Each replica's values go to the metrics agent on its node, so Prometheus sees every replica's series. Make the
metrics inside the replica process: Ray's metrics belong to the process that made them.
"""

from __future__ import annotations


class RayMetrics:
    """Counters and gauges of `ray.util.metrics`, with the default tags set."""

    def counter(self, name: str, description: str, tag_keys: tuple[str, ...], default_tags: dict[str, str]):
        from ray.util import metrics

        return metrics.Counter(name, description, tag_keys=tag_keys).set_default_tags(default_tags)

    def gauge(self, name: str, description: str, tag_keys: tuple[str, ...], default_tags: dict[str, str]):
        from ray.util import metrics

        return metrics.Gauge(name, description, tag_keys=tag_keys).set_default_tags(default_tags)
