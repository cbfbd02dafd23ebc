"""The locustfile's step shape drives the real server: paced users added in steps raise the rate in steps,
and the run ends by itself when the shape does."""

from __future__ import annotations

from tests.reliability.load import run_locust

STEP_USERS, STEP_S, PEAK, PER_USER_RPS = 2, 3, 6, 20


def test_step_shape_adds_users_in_steps_and_ends_by_itself(server, out):
    run = run_locust(server.url, out, "--shape", "step", "--step-users", str(STEP_USERS), "--step-seconds",
                     str(STEP_S), "--user-rps", str(PER_USER_RPS), run_time_s=3 * STEP_S, users=PEAK)
    run.check_nothing_lost()
    t0 = run.start.min()
    rates = [run.rate(run.status == 200, t0 + step * STEP_S + 0.5, t0 + (step + 1) * STEP_S)
             for step in range(3)]
    print(f"\nstep shape, {STEP_USERS} users more every {STEP_S} s at {PER_USER_RPS} req/s each: "
          f"{[round(r) for r in rates]} req/s")
    assert run.statuses() == {200: len(run.status)}
    for step, rate in enumerate(rates):
        offered = (step + 1) * STEP_USERS * PER_USER_RPS  # 40, 80, 120 req/s
        assert 0.7 * offered <= rate <= 1.2 * offered, f"step {step}: {rate:.0f} req/s, offered {offered}: {rates}"
    assert run.start.max() - t0 < 3 * STEP_S + 1, "the run went on past the shape's end"
