"""Faults under load: a replica process killed, the cache's Redis killed, the server restarted.

Each test runs a paced load (half of saturation) through locust, injects the
fault from here while it runs, and then reads what every request got.
"""

from __future__ import annotations

import time
import urllib.request

from tests.reliability.conftest import REQUEST_TIMEOUT_MS, paced_users, restart
from tests.reliability.load import Locust
from tests.reliability.replicas import replica_processes, wait_for_replicas

LOAD = 0.5  # of saturation
PER_USER_RPS = 20
MAX_FAILED = 0.01
RECOVERY_S = 30


def _paced_load(server, saturation, out, seconds: float, *args: str) -> Locust:
    users = paced_users(LOAD * saturation.rps, PER_USER_RPS)
    return Locust(server.url, out, "--user-rps", f"{LOAD * saturation.rps / users:.3f}", "--request-timeout-s", "60",
                  *args, run_time_s=seconds, users=users).start()


def test_a_killed_replica_is_restarted_and_costs_few_prompt_failures(server, saturation, out):
    before_kill_s, after_recovery_s = 8, 8
    locust = _paced_load(server, saturation, out, before_kill_s + RECOVERY_S + after_recovery_s)
    victim = replica_processes(server)[0]
    time.sleep(before_kill_s)
    killed_at = time.time()
    victim.kill()
    replaced = wait_for_replicas(server, 2, RECOVERY_S, without=frozenset({victim.pid}))
    recovered_at = time.time()
    time.sleep(after_recovery_s)
    locust.interrupt()
    run = locust.wait()

    run.check_nothing_lost()
    failed = run.status != 200
    late = run.rows(t0=recovered_at + 1)
    base_rate = run.rate(run.status == 200, run.start.min() + 2, killed_at)
    end_rate = run.rate(run.status == 200, recovered_at + 1, run.start.max())
    print(f"\nreplica {victim.pid} killed: replacement running after {recovered_at - killed_at:.1f} s; "
          f"{failed.sum()} of {len(run.status)} requests failed ({failed.mean():.3%}): {run.statuses(failed)} "
          f"{run.summary['no_answer_reasons']}, slowest failure {run.ms[failed].max() if failed.any() else 0:.0f} ms;"
          f" 200s {base_rate:.0f} req/s before the kill, {end_rate:.0f} req/s once replaced")
    assert len(replaced) == 2, f"Ray did not restart the replica within {RECOVERY_S} s: {replaced}"
    assert failed.mean() <= MAX_FAILED, f"{failed.mean():.2%} of requests failed: {run.statuses(failed)}"
    assert set(run.statuses(failed)) <= {0, 500, 502, 503, 504}, f"failures that are not 5xx: {run.statuses()}"
    assert (run.ms[failed] < REQUEST_TIMEOUT_MS).all(), "a failure took longer than the request timeout (a hang)"
    assert run.statuses(late) == {200: late.sum()}, f"failures once the replica was replaced: {run.statuses(late)}"
    assert end_rate >= 0.8 * base_rate, f"throughput {end_rate:.0f} req/s after recovery vs {base_rate:.0f} before"


def test_the_cache_redis_killed_mid_load_costs_no_errors(server, saturation, redis_process, out):
    errors_before = server.metric_total("ray_optiserve_cache_shared_errors_total", model="digits")
    locust = _paced_load(server, saturation, out, 20)  # unique inputs: every request asks Redis
    time.sleep(6)
    redis_process.stop()
    try:
        run = locust.wait()
    finally:
        redis_process.start()
    noticed = server.wait_for_metric("ray_optiserve_cache_shared_errors_total", errors_before + 1, model="digits")

    run.check_nothing_lost()
    print(f"\nRedis killed 6 s into 20 s of load: {run.statuses()}; shared-tier errors counted by the server: "
          f"{noticed - errors_before:g}")
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
    # While starting, the ingress keeps its port closed until every model has a replica (serve/ingress.py), so
    # clients see connection errors, then 200s: no 404 (Ray's ingress before any route) and no 503 (a model
    # still starting), which they saw before.
    assert set(run.statuses(during)) <= {200, 0}, f"answers other than connection errors: " \
                                                              f"{run.statuses(during)}"
    with urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=5) as response:
        assert response.status == 200
