"""The server's own count of answers by status (`ray_optiserve_requests_total`), to hold against the client's.

Replicas report every 2 s; a settled reading is two equal scrapes 2.5 s apart.
Counts are kept per replica (label WorkerId): a replica that is gone (killed
earlier) drops out of a later scrape, so differences are taken per replica,
and a killed replica counts up to its last reading (`answered_through`).
"""

from __future__ import annotations

from collections import Counter

from optiserve.local_server import RunningServer, scrape, settled

METRIC = "ray_optiserve_requests_total"
# How far behind the answers a scrape can be: a replica hands its tallies to Ray 0.5 s after the first
# (serve/observability/metrics.py FLUSH_AFTER_S) and Ray reports every 2 s
# (ServeSettings.metrics_report_interval_ms); the rest is slack for the agent's export and a busy 2-core
# machine. What a killed replica answered in this window before its death was never reported, and dies with it.
REPORT_LAG_S = 5.0


def counts_by_replica(server: RunningServer, model: str = "digits") -> dict[tuple[str, int], float]:
    return {
        (sample.labels["WorkerId"], int(sample.labels["status"])): sample.value
        for sample in scrape(server.metrics_url)
        if sample.name == METRIC and sample.labels.get("model") == model
    }


def settled_counts(server: RunningServer, model: str = "digits") -> dict[tuple[str, int], float]:
    reading: dict = {}

    def total() -> float:
        reading.clear()
        reading.update(counts_by_replica(server, model))
        return sum(reading.values())

    settled(total, f"{METRIC} for {model}")
    return dict(reading)


def answered_between(before: dict[tuple[str, int], float], after: dict[tuple[str, int], float]) -> Counter:
    """Answers by status counted by the server between two readings (replicas present in `after`)."""
    counts: Counter = Counter()
    for (worker, status), value in after.items():
        counts[status] += int(value - before.get((worker, status), 0))
    return +counts


def answered_through(before: dict[tuple[str, int], float], *readings: dict[tuple[str, int], float]) -> Counter:
    """Like `answered_between`, with each replica's series taken from the latest of `readings` that has it:
    a replica killed between two readings counts up to the last reading it appeared in."""
    latest: dict[tuple[str, int], float] = {}
    for reading in readings:
        latest.update(reading)
    return answered_between(before, latest)
