"""Overload: a base load, then 3x saturation offered for OVERLOAD_S seconds (20 in `make test`, 60 in
`make overload`), then the base load again.

Asserted: every request gets exactly one answer, a 200 or the reject status
(no connection errors, no 5xx, no hangs), no replica crashes, the replicas
counted exactly the 200s the clients received (the other refusals are the
ingress's), accepted requests keep a p99 within the server's request timeout,
throughput is back to the base rate within 10 s of the load dropping, and a
light probe client running alongside locust (tests/reliability/probe.py) is
refused too, with nothing but 200s and refusals, and its refusals come before
the queue: its median refusal takes under a third of its median accepted
request, and its p99 less than theirs. The 50 ms p99 target for refusals is
printed, not asserted (a timing on 2 shared cores; docs/RELIABILITY.md gives
the measured figures), as is locust's own view of the refusals (its saturated
event loop's queueing included).
"""

from __future__ import annotations

import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.reliability.conftest import OVERLOAD_S, REQUEST_TIMEOUT_MS, Saturation, measure_saturation, paced_users
from tests.reliability.load import Locust, LoadRun
from tests.reliability.probe import NO_ANSWER, Probe
from tests.reliability.replicas import replica_processes
from tests.reliability.server_counts import answered_between, settled_counts

BASE_LOAD, OVERLOAD = 0.7, 3.0  # of saturation
PER_USER_RPS = 10  # low, so that offering 3x saturation takes many concurrent users
BEFORE_S, AFTER_S = 8, 13
RECOVERY_S = 10
RECOVERED = 0.8  # of the base rate, three seconds running
REJECT_STATUS = 503
PROBE_REFUSALS = 10  # at least, during a 3x spike
FAST_REJECTION_MS = 50  # the target, printed
REFUSAL_SPEEDUP = 3  # a typical refusal at least this many times quicker than a typical accepted request


@dataclass(frozen=True)
class ProbeView:
    """What the probe saw from 1 s into the overload (the queue has formed) to its end."""

    status: np.ndarray
    ms: np.ndarray

    @property
    def refused_ms(self) -> np.ndarray:
        return self.ms[self.status == REJECT_STATUS]

    @property
    def accepted_ms(self) -> np.ndarray:
        return self.ms[self.status == 200]


def _spike(server, saturation: Saturation, out: Path):
    """Base load, the 3x spike, base load again, with the probe alongside: (locust run, probe, users, replicas'
    counts of what they answered, what the clients received)."""
    base_users = paced_users(BASE_LOAD * saturation.rps, PER_USER_RPS)
    spike_users = paced_users(OVERLOAD * saturation.rps, PER_USER_RPS)
    before = settled_counts(server)
    locust = Locust(server.url, out, "--user-rps", str(PER_USER_RPS), "--shape", "spike",
                    "--spike-users", str(spike_users), "--spike-at", str(BEFORE_S),
                    "--spike-seconds", str(OVERLOAD_S), "--request-timeout-s", "60",
                    run_time_s=BEFORE_S + OVERLOAD_S + AFTER_S, users=base_users)
    with Probe(server.url, max_s=BEFORE_S + OVERLOAD_S + AFTER_S + 60) as probe:
        run = locust.start().wait()
    counted = answered_between(before, settled_counts(server))
    received = run.statuses() + Counter(probe.rows(-np.inf, np.inf)[0].tolist())  # locust's and the probe's
    return run, probe, (base_users, spike_users), counted, received


def test_overload_at_3x_saturation(server, saturation, out):
    replicas = {process.pid for process in replica_processes(server)}
    run, probe, (base_users, spike_users), counted, received = _spike(server, saturation, out)
    probe_refusals = Counter(probe.rows(-np.inf, np.inf)[0].tolist())[REJECT_STATUS]
    if probe_refusals < PROBE_REFUSALS:
        # The probe was (almost) never refused: the spike hardly overloaded the server, so saturation was measured
        # low (another job loading the machine then). Measured again and spiked once more; the assertions below
        # hold for that run.
        print(f"\n{probe_refusals} probe refusals at {OVERLOAD:g}x a saturation of {saturation.rps:.0f} req/s: "
              "measuring it again")
        saturation = measure_saturation(server.url, out.with_name("saturation-again"))
        run, probe, (base_users, spike_users), counted, received = _spike(server, saturation,
                                                                          out.with_name("locust-again"))

    run.check_nothing_lost()
    assert set(run.statuses()) <= {200, REJECT_STATUS}, f"answers other than 200/{REJECT_STATUS}: {run.statuses()}"
    assert {process.pid for process in replica_processes(server)} == replicas, "a replica crashed and was replaced"
    with urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=5) as response:
        assert response.status == 200

    t0 = run.start.min()
    spike_start, spike_end = t0 + BEFORE_S, t0 + BEFORE_S + OVERLOAD_S
    accepted_p99 = run.p99_ms(run.rows(t0=spike_start, t1=spike_end, status=200))
    base_rate = run.rate(run.rows(status=200), t0 + 2, spike_start)
    after = run.per_second(run.status == 200, spike_end, AFTER_S)
    recovered_after = _first_sustained(after, RECOVERED * base_rate)
    seen = ProbeView(*probe.rows(spike_start + 1, spike_end))
    _print_overload(run, saturation, base_users, spike_users, base_rate, after, recovered_after, seen)
    print(f"answers counted by the replicas: {dict(counted)}; received by the clients (locust and probe): "
          f"{dict(received)}; so refused at the ingress: {received[REJECT_STATUS] - counted[REJECT_STATUS]}")

    # The replicas count what they answer; the ingress's refusals never reach them.
    assert counted[200] == received[200], f"replicas counted {counted[200]} 200s, the clients received {received[200]}"
    assert set(counted) <= {200, REJECT_STATUS} and counted[REJECT_STATUS] <= received[REJECT_STATUS], \
        f"replicas counted {dict(counted)}, the clients received {dict(received)}"
    assert set(seen.status.tolist()) <= {200, REJECT_STATUS}, f"probe: {Counter(seen.status.tolist())}"
    assert NO_ANSWER not in seen.status
    assert len(seen.refused_ms) >= PROBE_REFUSALS, \
        f"3x saturation, yet the probe was hardly ever refused: {len(seen.refused_ms)}"
    # Refused before the queue, not after waiting in it. No absolute time is asserted: on 2 shared cores a
    # refusal's tail is the scheduler's (docs/RELIABILITY.md has the measured p99 against the 50 ms target).
    # Asserted instead, measured alongside and so under the same noise: a typical refusal takes a fraction
    # of a typical accepted request's time (measured 0.8 against 21 ms; refusals decided after queueing, as
    # before the ingress admission, took about as long as answers), and the slowest refusals are quicker
    # than the slowest answers.
    refused_p50, accepted_p50 = _percentile(seen.refused_ms, 50), _percentile(seen.accepted_ms, 50)
    assert REFUSAL_SPEEDUP * refused_p50 < accepted_p50, \
        f"probe refusals p50 {refused_p50:.1f} ms against accepted p50 {accepted_p50:.1f} ms: refusals queue"
    assert _percentile(seen.refused_ms, 99) < _percentile(seen.accepted_ms, 99), \
        f"probe refusals p99 {_percentile(seen.refused_ms, 99):.1f} ms not below accepted p99"
    assert accepted_p99 <= REQUEST_TIMEOUT_MS, f"accepted p99 {accepted_p99:.0f} ms beyond the request timeout"
    assert recovered_after is not None and recovered_after <= RECOVERY_S, \
        f"throughput not back to {RECOVERED:.0%} of {base_rate:.0f} req/s within {RECOVERY_S} s: {after.tolist()}"


def _print_overload(run: LoadRun, saturation, base_users: int, spike_users: int, base_rate: float,
                    after: np.ndarray, recovered_after: int | None, seen: ProbeView) -> None:
    spike_start = run.start.min() + BEFORE_S
    spike_end = spike_start + OVERLOAD_S
    during = run.rows(t0=spike_start, t1=spike_end)
    rejected = during & (run.status == REJECT_STATUS)
    print(f"\noverload: base {base_users} users ({base_rate:.0f} req/s answered), then {spike_users} users offering "
          f"{spike_users * PER_USER_RPS} req/s ({OVERLOAD:g}x {saturation.rps:.0f}) for {OVERLOAD_S:g}s: "
          f"{run.statuses(during)}; answered {run.rate(run.status == 200, spike_start, spike_end):.0f} req/s; "
          f"accepted p99 {run.p99_ms(during & (run.status == 200)):.0f} ms, max {run.ms[during].max():.0f} ms; "
          f"rejections {rejected.sum()}, p99 {run.p99_ms(rejected):.0f} ms (locust's view); "
          f"after the drop, 200s per second: {after.tolist()} (back to {RECOVERED:.0%} of base after "
          f"{recovered_after} s). Probe during the overload: {Counter(seen.status.tolist())}, rejections p50 "
          f"{_percentile(seen.refused_ms, 50):.1f} ms, p99 {_percentile(seen.refused_ms, 99):.1f} ms (target "
          f"{FAST_REJECTION_MS} ms); accepted p50 {_percentile(seen.accepted_ms, 50):.0f} ms, "
          f"p99 {_percentile(seen.accepted_ms, 99):.0f} ms")


def _first_sustained(per_second: np.ndarray, at_least: float, run: int = 3) -> int | None:
    """The first second from which `run` consecutive seconds reach `at_least`."""
    for second in range(len(per_second) - run + 1):
        if (per_second[second : second + run] >= at_least).all():
            return second
    return None


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")
