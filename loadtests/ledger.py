"""Accounting for a load test: every request sent, every answer received, by name and status.

Status 0 means no HTTP answer came (connection refused or reset, or the client's
timeout). A request still in flight when the load generator was told to stop
is counted as `abandoned`, not as lost. `lost` (sent, but neither answered,
abandoned nor in flight) must be zero. No locust import here.
"""

from __future__ import annotations

import json
import time
from array import array
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np


class Ledger:
    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.abandoned: Counter[str] = Counter()
        self.abandoned_reasons: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.in_flight: Counter[str] = Counter()
        self.answers: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self.no_answer_reasons: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._names: dict[str, int] = {}
        self._start, self._ms, self._status, self._name = array("d"), array("f"), array("H"), array("H")

    @contextmanager
    def track(self, name: str) -> Iterator[None]:
        """Wrap one request: counts it as sent, and as abandoned if the request is cancelled midway."""
        self.sent[name] += 1
        self.in_flight[name] += 1
        try:
            yield
        except BaseException as error:  # cancelled (the greenlet was killed at shutdown) or failed in the client
            self.abandoned[name] += 1
            self.abandoned_reasons[name][type(error).__name__] += 1
            raise
        finally:
            self.in_flight[name] -= 1

    def answered(self, name: str, status: int, response_ms: float, start_time: float, error: str = "") -> None:
        """One answer: `start_time` in seconds since the epoch, status 0 when no HTTP answer came."""
        self.answers[name][status] += 1
        if status == 0:
            self.no_answer_reasons[name][error or "unknown"] += 1
        index = self._names.setdefault(name, len(self._names))
        self._start.append(start_time)
        self._ms.append(response_ms)
        self._status.append(status)
        self._name.append(index)

    def lost(self) -> dict[str, int]:
        names = set(self.sent) | set(self.answers)
        counts = {name: self.sent[name] - sum(self.answers[name].values()) - self.abandoned[name]
                  - self.in_flight[name] for name in names}
        return {name: count for name, count in counts.items() if count}

    def summary(self) -> dict:
        return {
            "sent": dict(self.sent),
            "answers": {name: {str(status): n for status, n in sorted(counts.items())}
                        for name, counts in self.answers.items()},
            "no_answer_reasons": {name: dict(reasons) for name, reasons in self.no_answer_reasons.items()},
            "abandoned": dict(+self.abandoned),
            "abandoned_reasons": {name: dict(reasons) for name, reasons in self.abandoned_reasons.items()},
            "in_flight": dict(+self.in_flight),
            "lost": self.lost(),
            "written_at": time.time(),
        }

    def write(self, prefix: Path) -> None:
        """`prefix`.json: the summary; `prefix`.npz: one row per answer (start, ms, status, name)."""
        prefix.parent.mkdir(parents=True, exist_ok=True)
        prefix.with_suffix(".json").write_text(json.dumps(self.summary(), indent=1))
        names = sorted(self._names, key=self._names.get)
        np.savez(prefix.with_suffix(".npz"), start=np.frombuffer(self._start, dtype=np.float64),
                 ms=np.frombuffer(self._ms, dtype=np.float32), status=np.frombuffer(self._status, dtype=np.uint16),
                 name=np.frombuffer(self._name, dtype=np.uint16), names=np.array(names, dtype=str))


def slo_violations(requests: int, failures: int, p99_ms: float, max_p99_ms: float | None,
                   max_error_ratio: float | None) -> list[str]:
    """What a run broke of its service-level objectives (None: that objective is not checked)."""
    violations = []
    if requests == 0:
        return ["no requests were made"]
    if max_p99_ms is not None and p99_ms > max_p99_ms:
        violations.append(f"p99 latency {p99_ms:.1f} ms exceeds the objective of {max_p99_ms:g} ms")
    ratio = failures / requests
    if max_error_ratio is not None and ratio > max_error_ratio:
        violations.append(f"error ratio {ratio:.4f} ({failures} of {requests}) exceeds the objective of "
                          f"{max_error_ratio:g}")
    return violations
