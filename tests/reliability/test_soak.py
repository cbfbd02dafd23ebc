"""Soak: steady load at about 70% of saturation for SOAK_S seconds (60 in `make test`, 600 in `make soak`).

Zero errors, p99 of the last window within 20% of the first (plus a few ms of
scheduler noise on a shared 2-core machine), replica memory growth within 10%,
and the server counted exactly the answers the client received. Inputs are
Zipf over a fixed pool (realistic, cache-warm): the result cache fills in the
warm-up and then stays flat, so growth after it is a leak, not the cache.
"""

from __future__ import annotations

import time

from tests.reliability.conftest import SOAK_S, paced_users
from tests.reliability.load import Locust
from tests.reliability.replicas import replica_processes, rss_bytes
from tests.reliability.server_counts import answered_between, settled_counts

LOAD = 0.7  # of saturation
PER_USER_RPS = 40
WINDOW_S = 60 if SOAK_S >= 300 else 10  # "first and last minute" of the full soak
MAX_P99_DRIFT = 0.20
DRIFT_NOISE_MS = 5.0
MAX_MEMORY_GROWTH = 0.10


def test_soak_at_70_percent_of_saturation(server, saturation, out):
    target = LOAD * saturation.rps
    users = paced_users(target, PER_USER_RPS)
    replicas = replica_processes(server)
    assert len(replicas) == 2, f"expected 2 digits replicas, found {[p.pid for p in replicas]}"
    before = settled_counts(server)
    locust = Locust(server.url, out, "--inputs", "zipf", "--user-rps", f"{target / users:.3f}",
                    run_time_s=SOAK_S, users=users).start()
    memory = _sample_memory(replicas, locust, warmup_s=WINDOW_S)
    run = locust.wait()
    answered = answered_between(before, settled_counts(server))

    run.check_nothing_lost()
    assert run.statuses() == {200: len(run.status)}, f"errors under steady load: {run.statuses()}"
    assert answered == run.statuses(), f"server counted {answered}, client received {run.statuses()}"

    t0, t1 = run.start.min(), run.start.max()
    first = run.p99_ms(run.rows(t0=t0, t1=t0 + WINDOW_S))
    last = run.p99_ms(run.rows(t0=t1 - WINDOW_S, t1=t1 + 1))
    rate = run.rate(run.rows(status=200), t0, t1)
    print(f"\nsoak {SOAK_S:g}s: {users} users offering {target:.0f} req/s ({LOAD:.0%} of {saturation.rps:.0f}), "
          f"achieved {rate:.0f} req/s, {len(run.status)} requests, all 200; p99 first {WINDOW_S}s {first:.1f} ms, "
          f"last {WINDOW_S}s {last:.1f} ms (drift {last / first - 1:+.1%})")
    for pid, (start, end) in memory.items():
        print(f"replica {pid}: RSS {start / 2**20:.1f} MiB after warm-up, {end / 2**20:.1f} MiB at the end "
              f"({end / start - 1:+.1%})")
    assert last <= first * (1 + MAX_P99_DRIFT) + DRIFT_NOISE_MS, f"p99 drifted from {first:.1f} to {last:.1f} ms"
    for pid, (start, end) in memory.items():
        assert end <= start * (1 + MAX_MEMORY_GROWTH), f"replica {pid} grew from {start} to {end} bytes"


def _sample_memory(replicas, locust: Locust, warmup_s: float) -> dict[int, tuple[int, int]]:
    """Each replica's RSS after the warm-up and at the end of the run; fails if one was replaced."""
    time.sleep(warmup_s)
    start = end = rss_bytes(replicas)
    while locust.process.poll() is None and time.time() < locust.started_at + SOAK_S + 60:
        end = rss_bytes(replicas)  # raises NoSuchProcess if a replica died
        time.sleep(1)
    return {pid: (start[pid], end[pid]) for pid in start}
