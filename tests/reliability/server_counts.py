"""The server's own count of answers by status (`ray_optiserve_requests_total`), to hold against the client's.

Replicas report every 2 s; a settled reading is two equal scrapes 2.5 s apart.
Counts are kept per replica (label WorkerId): a replica that is gone (killed
earlier) drops out of a later scrape, so differences are taken per replica.
"""

from __future__ import annotations

from collections import Counter

from optiserve.local_server import RunningServer, scrape, settled

METRIC = "ray_optiserve_requests_total"


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
