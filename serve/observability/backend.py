"""Where ServeMetrics' values go: a MetricsBackend makes the named counters and gauges it sets.

On Ray, serve/on_ray/metrics_backend.py hands them to Ray's metrics agent, which Prometheus scrapes.
`InMemoryMetrics` keeps them in this process: a pipeline built without Ray (tests, tools) still counts, and
a test can read what it counted.
"""

from __future__ import annotations

from typing import Protocol


class Counter(Protocol):
    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None: ...


class Gauge(Protocol):
    def set(self, value: float, tags: dict[str, str] | None = None) -> None: ...


class MetricsBackend(Protocol):
    """Makes a metric named `name` whose series are told apart by `tag_keys`; `default_tags` (a subset of them)
    go with every value, and a value's own tags add the rest."""

    def counter(self, name: str, description: str, tag_keys: tuple[str, ...],
                default_tags: dict[str, str]) -> Counter: ...

    def gauge(self, name: str, description: str, tag_keys: tuple[str, ...],
              default_tags: dict[str, str]) -> Gauge: ...


class InMemoryMetrics:
    """Counters' totals and gauges' latest values, by name and tags, in this process."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

    def counter(self, name: str, description: str, tag_keys: tuple[str, ...],
                default_tags: dict[str, str]) -> "_Series":
        return _Series(self.values, name, tag_keys, default_tags)

    def gauge(self, name: str, description: str, tag_keys: tuple[str, ...],
              default_tags: dict[str, str]) -> "_Series":
        return _Series(self.values, name, tag_keys, default_tags)

    def value(self, name: str, **tags: str) -> float:
        """The total (counter) or latest value (gauge) of `name`'s series with exactly these tags; 0 if none."""
        return self.values.get((name, frozenset(tags.items())), 0.0)


class _Series:
    """One metric of InMemoryMetrics (counter: `inc`, gauge: `set`): each value is kept under the metric's
    name and its full set of tags."""

    def __init__(self, values: dict, name: str, tag_keys: tuple[str, ...], default_tags: dict[str, str]) -> None:
        unknown = set(default_tags) - set(tag_keys)
        if unknown:
            raise ValueError(f"metric {name}: default tags {sorted(unknown)} are not among its tag keys {tag_keys}")
        self._values, self._name, self._keys, self._defaults = values, name, tag_keys, default_tags

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        key = self._key(tags)
        self._values[key] = self._values.get(key, 0.0) + value

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self._values[self._key(tags)] = value

    def _key(self, tags: dict[str, str] | None) -> tuple[str, frozenset[tuple[str, str]]]:
        merged = {**self._defaults, **(tags or {})}
        if set(merged) != set(self._keys):
            raise ValueError(f"metric {self._name}: expected tags {sorted(self._keys)}, got {sorted(merged)}")
        return self._name, frozenset(merged.items())
