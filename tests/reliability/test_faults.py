"""Faults under load: a replica process killed, the cache's Redis killed, the server restarted.

Each test runs a paced load (half of saturation) through locust, injects the
fault from here while it runs, and then reads what every request got and,
where the server stayed up, what the server counted.
"""

from __future__ import annotations

import time
import urllib.request

from tests.reliability.conftest import paced_users, restart
from tests.reliability.load import Locust
from tests.reliability.replicas import replica_processes, wait_for_replicas
from tests.reliability.server_counts import (REPORT_LAG_S, answered_between, answered_through, counts_by_replica,
                                             settled_counts)

LOAD = 0.5  # of saturation
PER_USER_RPS = 20
RECOVERY_S = 30


def _paced_load(server, saturation, out, seconds: float, *args: str) -> Locust:
    users = paced_users(LOAD * saturation.rps, PER_USER_RPS)
    return Locust(server.url, out, "--user-rps", f"{LOAD * saturation.rps / users:.3f}", "--request-timeout-s", "60",
                  *args, run_time_s=seconds, users=users).start()


def test_a_killed_replica_is_replaced_and_costs_no_request(server, saturation, out):
    before_kill_s, after_recovery_s = 8, 8
    before = settled_counts(server)
    locust = _paced_load(server, saturation, out, before_kill_s + RECOVERY_S + after_recovery_s)
    victim = replica_processes(server)[0]
    time.sleep(before_kill_s)
    last_seen, seen_at = counts_by_replica(server), time.time()  # the victim's count, as last reported
    killed_at = time.time()
    victim.kill()
    replaced = wait_for_replicas(server, 2, RECOVERY_S, without=frozenset({victim.pid}))
    recovered_at = time.time()
    time.sleep(after_recovery_s)
    locust.interrupt()
    run = locust.wait()
    counted = answered_through(before, last_seen, settled_counts(server))

    run.check_nothing_lost()
    failed = run.status != 200
    in_flight = (run.start < killed_at) & (run.done >= killed_at)  # on either replica: an upper bound
    # What the victim answered after its last report died with it: at most the 200s of that window.
    unreported = (run.status == 200) & (run.done >= seen_at - REPORT_LAG_S) & (run.start < killed_at)
    received_200s = int((run.status == 200).sum())
    base_rate = run.rate(run.status == 200, run.start.min() + 2, killed_at)
    end_rate = run.rate(run.status == 200, recovered_at + 1, run.start.max())
    print(f"\nreplica {victim.pid} killed: replacement running after {recovered_at - killed_at:.1f} s; "
          f"{failed.sum()} of {len(run.status)} requests failed: {run.statuses(failed)} "
          f"{run.summary['no_answer_reasons']}; {in_flight.sum()} were in flight at the kill; "
          f"200s {base_rate:.0f} req/s before the kill, {end_rate:.0f} req/s once replaced; server counted "
          f"{dict(counted)} against {dict(run.statuses())} received ({received_200s - counted[200]} 200s "
          f"unreported by the killed replica, at most {unreported.sum()})")
    assert len(replaced) == 2, f"Ray did not restart the replica within {RECOVERY_S} s: {replaced}"
    # HAProxy resends a request whose replica closed the connection without an answer (retry-on empty-response,
    # serve/on_ray/runner.py) to the other replica, so the requests in flight on the dead one are answered too.
    assert not failed.any(), f"{failed.sum()} requests failed ({in_flight.sum()} were in flight at the kill): " \
                             f"{run.statuses(failed)} {run.summary['no_answer_reasons']}"
    assert set(counted) == {200} and 0 <= received_200s - counted[200] <= unreported.sum(), \
        f"server counted {dict(counted)}, the client received {dict(run.statuses())}"
    assert end_rate >= 0.8 * base_rate, f"throughput {end_rate:.0f} req/s after recovery vs {base_rate:.0f} before"


def test_the_cache_redis_killed_mid_load_costs_no_errors(server, saturation, redis_process, out):
    errors_before = server.metric_total("ray_optiserve_cache_shared_errors_total", model="digits")
    before = settled_counts(server)
    locust = _paced_load(server, saturation, out, 20)  # unique inputs: every request asks Redis
    time.sleep(6)
    redis_process.stop()
    try:
        run = locust.wait()
    finally:
        redis_process.start()
    noticed = server.wait_for_metric("ray_optiserve_cache_shared_errors_total", errors_before + 1, model="digits")
    counted = answered_between(before, settled_counts(server))

    run.check_nothing_lost()
    print(f"\nRedis killed 6 s into 20 s of load: {run.statuses()}; shared-tier errors counted by the server: "
          f"{noticed - errors_before:g}; answers counted by the server: {dict(counted)}")
    assert counted == run.statuses(), f"server counted {counted}, the client received {run.statuses()}"
    assert noticed > errors_before, "the server never noticed Redis was gone: was the shared tier in use?"
    assert run.statuses() == {200: len(run.status)}, f"errors after Redis went away: {run.statuses()}"


def test_a_server_restarted_under_load_costs_only_connection_errors_during_the_restart(server, saturation, out):
    locust = _paced_load(server, saturation, out, 120)
    time.sleep(4)
    stopping, ready = restart(server)
    time.sleep(3)
    locust.interrupt()
    run = locust.wait()

    run.check_nothing_lost()
    outside = (run.done < stopping) | (run.start >= ready)  # answered before the stop, or sent once ready
    during = ~outside
    print(f"\nrestart: stopped and ready again in {ready - stopping:.1f} s; during it {run.statuses(during)} "
          f"({run.summary['no_answer_reasons']}); before and after {run.statuses(outside)}")
    assert run.statuses(outside) == {200: outside.sum()}, f"errors outside the restart: {run.statuses(outside)}"
    in_flight = (run.start < stopping) & (run.done >= stopping)  # sent before SIGTERM, answered (or not) after
    assert set(run.statuses(in_flight)) <= {200}, f"requests in flight at SIGTERM must be answered: " \
                                                    f"{run.statuses(in_flight)}"
    # While starting, the ingress keeps its port closed until every model has a replica (serve/on_ray/ingress.py), so
    # clients see connection errors, then 200s: no 404 (Ray's ingress before any route) and no 503 (a model
    # still starting), which they saw before.
    assert set(run.statuses(during)) <= {200, 0}, f"answers other than connection errors: " \
                                                              f"{run.statuses(during)}"
    with urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=5) as response:
        assert response.status == 200
