"""The plain locust command against a server that serves digits only (the e2e `server` fixture).

`locust -f loadtests/locustfile.py --headless --host URL` with no class names runs every user class. MiniLMUser's
model is not served here: it must send nothing and say so once, while DigitsUser and BadInputUser run and
nothing counts as a failure (a malformed request's 4xx is the answer BadInputUser expects).
"""

from __future__ import annotations

from tests.reliability.load import Locust

RUN_S = 6  # a few seconds of load: the test is about which requests are sent, not about how fast
USERS = 4  # BadInputUser takes one (fixed_count); DigitsUser and MiniLMUser share the other three


def test_plain_locust_sends_nothing_for_a_model_the_server_does_not_serve(server, tmp_path):
    run = Locust(server.url, tmp_path / "plain", run_time_s=RUN_S, users=USERS, user_classes=()).start().wait()

    run.check_nothing_lost()
    assert "minilm" not in run.summary["sent"], f"requests went to the MiniLM route: {run.summary['sent']}"
    assert run.summary["sent"].get("digits", 0) > 0, run.summary
    assert any(name.startswith("bad:") for name in run.summary["sent"]), run.summary
    assert run.failures() == {}, f"failures in a plain run: {run.failures()}"
    assert run.exit_code == 0, run.log[-3000:]
    skipped = [line for line in run.log.splitlines() if "MiniLMUser sends nothing" in line]
    assert len(skipped) == 1, run.log[-3000:]
    assert "'minilm'" in skipped[0] and "available models: digits" in skipped[0], skipped


def test_a_named_class_whose_model_is_not_served_fails_the_run(server, tmp_path):
    run = Locust(server.url, tmp_path / "named", run_time_s=2, users=2,
                 user_classes=("DigitsUser", "MiniLMUser")).start().wait()

    assert set(run.summary["sent"]) == {"digits"}, run.summary
    assert run.failures() == {}, run.failures()
    assert run.exit_code == 1, run.log[-3000:]  # the digits requests all succeeded: the code is for MiniLMUser
    assert "nothing was sent for MiniLMUser" in run.log, run.log[-3000:]
