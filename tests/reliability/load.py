"""Run loadtests/locustfile.py headless in a child process and read back what it saw.

Locust patches the standard library with gevent when imported, so it never runs
inside the pytest process. Every run is bounded: locust's --run-time and
--max-requests, and a hard kill if it outlives them by `grace_s`.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"
STOP_TIMEOUT_S = 15  # users finish the request in flight when the run ends


@dataclass
class LoadRun:
    """One locust run: the ledger's summary and one row per answer (start time, ms, status, name)."""

    exit_code: int
    summary: dict
    start: np.ndarray  # seconds since the epoch
    ms: np.ndarray
    status: np.ndarray
    names: np.ndarray  # the request name of each row
    log: str
    prefix: Path  # where locust wrote its reports (PREFIX_stats.csv, PREFIX_failures.csv, PREFIX.html)

    def rows(self, name: str | None = None, t0: float = -np.inf, t1: float = np.inf,
             status: int | None = None) -> np.ndarray:
        """A mask: rows of request `name` (None: all) started in [t0, t1), with `status` if given."""
        mask = (self.start >= t0) & (self.start < t1)
        if name is not None:
            mask &= self.names == name
        if status is not None:
            mask &= self.status == status
        return mask

    def statuses(self, mask: np.ndarray | None = None) -> Counter:
        chosen = self.status if mask is None else self.status[mask]
        return Counter(int(s) for s in chosen)

    def p99_ms(self, mask: np.ndarray) -> float:
        return float(np.percentile(self.ms[mask], 99)) if mask.any() else float("nan")

    def rate(self, mask: np.ndarray, t0: float, t1: float) -> float:
        """Answers per second among `mask` rows started in [t0, t1)."""
        return float((mask & (self.start >= t0) & (self.start < t1)).sum() / (t1 - t0))

    @property
    def done(self) -> np.ndarray:
        """When each answer arrived, in seconds since the epoch."""
        return self.start + self.ms / 1000

    def per_second(self, mask: np.ndarray, t0: float, seconds: int) -> np.ndarray:
        """Answers among `mask` rows by the whole second (since t0) in which they arrived."""
        offsets = np.floor(self.done[mask] - t0).astype(int)
        offsets = offsets[(offsets >= 0) & (offsets < seconds)]
        return np.bincount(offsets, minlength=seconds)

    def failures(self) -> dict[str, list[str]]:
        """Locust's failure messages by request name (answers the locustfile judged wrong), with counts."""
        found: dict[str, list[str]] = {}
        with open(self.prefix.with_name(self.prefix.name + "_failures.csv"), newline="") as table:
            for row in csv.DictReader(table):
                found.setdefault(row["Name"], []).append(f"{row['Occurrences']}x {row['Error']}")
        return found

    def check_nothing_lost(self) -> None:
        """Every request sent got exactly one answer (an HTTP status, or a recorded connection error)."""
        sent, answers = self.summary["sent"], self.summary["answers"]
        assert not self.summary["lost"], f"requests without an answer: {self.summary}"
        assert not self.summary["abandoned"], f"requests cut off in the client: {self.summary}"
        for name, count in sent.items():
            answered = sum(answers.get(name, {}).values())
            assert answered == count, f"{name}: sent {count} requests, got {answered} answers: {self.summary}"
        assert len(self.status) == sum(sent.values()), "the per-request log disagrees with the counts"


class Locust:
    """A locust process running the locustfile against `url`; start(), then wait() or interrupt()."""

    def __init__(self, url: str, out: Path, *args: str, run_time_s: float, users: int,
                 user_classes: tuple[str, ...] = ("DigitsUser",), grace_s: float = 90) -> None:
        self.prefix, self.run_time_s, self.grace_s = out, run_time_s, grace_s
        self.command = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
            "--host", url, "-u", str(users), "-r", str(users), "-t", f"{run_time_s:g}s",
            "--stop-timeout", str(STOP_TIMEOUT_S), "--ledger", str(out), "--csv", str(out),
            "--html", str(out.with_suffix(".html")), "--exit-code-on-error", "0", *args, *user_classes,
        ]
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> "Locust":
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.prefix.with_suffix(".log"), "w")
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT)
        self.started_at = time.time()
        return self

    def interrupt(self) -> None:
        """End the run early: users finish their requests in flight, the ledger and CSVs are written.

        SIGTERM, not SIGINT: locust handles SIGTERM in its event loop, while a SIGINT's
        KeyboardInterrupt can land inside whichever user is running and cut its request off.
        """
        self.process.send_signal(signal.SIGTERM)

    def wait(self) -> LoadRun:
        deadline = self.run_time_s + STOP_TIMEOUT_S + self.grace_s
        try:
            code = self.process.wait(deadline)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"locust outlived its run time by {STOP_TIMEOUT_S + self.grace_s}s and was killed; "
                                 f"log: {self.prefix.with_suffix('.log')}") from None
        finally:
            self._log.close()
        return read_run(self.prefix, code)


def read_run(prefix: Path, exit_code: int) -> LoadRun:
    log = prefix.with_suffix(".log").read_text() if prefix.with_suffix(".log").exists() else ""
    if not prefix.with_suffix(".json").exists():
        raise AssertionError(f"locust exited with {exit_code} and wrote no ledger:\n{log[-3000:]}")
    data = np.load(prefix.with_suffix(".npz"))
    names = data["names"][data["name"]] if len(data["names"]) else np.array([], dtype=str)
    return LoadRun(exit_code, json.loads(prefix.with_suffix(".json").read_text()), data["start"],
                   data["ms"].astype(np.float64), data["status"].astype(int), names, log, prefix)


def run_locust(url: str, out: Path, *args: str, run_time_s: float, users: int,
               user_classes: tuple[str, ...] = ("DigitsUser",)) -> LoadRun:
    return Locust(url, out, *args, run_time_s=run_time_s, users=users, user_classes=user_classes).start().wait()
