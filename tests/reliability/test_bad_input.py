"""Bad input under load: the malformed-request corpus (loadtests/corpus.py) mixed into normal traffic.

Each malformed request must get its 4xx and a JSON error message, normal traffic
must see no errors and no pathological slowdown, and the server must have
counted exactly the answers the client received, status by status.
"""

from __future__ import annotations

from loadtests.corpus import CORPUS
from tests.reliability.conftest import paced_users
from tests.reliability.load import run_locust
from tests.reliability.server_counts import answered_between, settled_counts

LOAD = 0.5  # of saturation, for the normal traffic
PER_USER_RPS = 20
BAD_RPS = 25  # the whole corpus comes round about every 7 s
# Known server bugs (docs/RELIABILITY.md): NaN, Infinity and values beyond FP32 are accepted with 200 and
# answered with null logits. Sent and counted here, but not held to 400 until serve/ rejects them.
ACCEPTED_TODAY = {"nan_value", "infinity_value", "beyond_fp32_range"}
SLOWDOWN, SLOWDOWN_NOISE_MS = 3.0, 20.0  # normal p99 with bad traffic vs without: generous, catches stalls


def test_malformed_requests_get_4xx_and_normal_traffic_is_unaffected(server, saturation, out):
    users = paced_users(LOAD * saturation.rps, PER_USER_RPS)
    pacing = ("--user-rps", f"{LOAD * saturation.rps / users:.3f}")
    alone = run_locust(server.url, out.with_name("alone"), *pacing, run_time_s=6, users=users)
    before = settled_counts(server)
    mixed = run_locust(server.url, out, *pacing, "--bad-rps", str(BAD_RPS), run_time_s=16, users=users + 1,
                       user_classes=("DigitsUser", "BadInputUser"))
    counted = answered_between(before, settled_counts(server))

    for run in (alone, mixed):
        run.check_nothing_lost()
    normal = mixed.names == "digits"
    failures = mixed.failures()
    p99_alone, p99_mixed = alone.p99_ms(alone.names == "digits"), mixed.p99_ms(normal)
    print(f"\nnormal traffic p99 {p99_alone:.1f} ms alone, {p99_mixed:.1f} ms with malformed requests mixed in; "
          f"normal {mixed.statuses(normal)}")
    for case in CORPUS:
        mask = mixed.names == f"bad:{case.name}"
        print(f"  {case.name:26s} {dict(mixed.statuses(mask))} p99 {mixed.p99_ms(mask):.0f} ms "
              f"{failures.get(f'bad:{case.name}', '')}")
    assert mixed.statuses(normal) == {200: normal.sum()}, f"normal traffic failed: {mixed.statuses(normal)}"
    assert counted == mixed.statuses(), f"server counted {counted}, the client received {mixed.statuses()}"
    for case in CORPUS:
        mask = mixed.names == f"bad:{case.name}"
        assert mask.any(), f"{case.name} was never sent in {mixed.summary['sent']}"
        assert 500 not in {s // 100 * 100 for s in mixed.statuses(mask)}, f"{case.name}: {mixed.statuses(mask)}"
        if case.name not in ACCEPTED_TODAY:
            assert f"bad:{case.name}" not in failures, failures[f"bad:{case.name}"]
    assert p99_mixed <= SLOWDOWN * p99_alone + SLOWDOWN_NOISE_MS, \
        f"normal p99 went from {p99_alone:.1f} to {p99_mixed:.1f} ms with malformed requests mixed in"
