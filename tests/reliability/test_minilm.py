"""The locustfile's MiniLMUser against the real all-MiniLM-L6-v2 artifact: generated sentences in,
384-dimensional embeddings out, cache-cold (every sentence new); nothing lost, no errors."""

from __future__ import annotations

from tests.reliability.load import run_locust
from tests.reliability.server_counts import answered_between, settled_counts


def test_minilm_user_under_load(server, out):
    before = settled_counts(server, model="minilm")
    run = run_locust(server.url, out, "--inputs", "unique", "--rows", "4", run_time_s=8, users=8,
                     user_classes=("MiniLMUser",))
    counted = answered_between(before, settled_counts(server, model="minilm"))

    run.check_nothing_lost()
    ok = run.status == 200
    print(f"\nMiniLM, unique inputs, 4 sentences per request, 8 users: {run.statuses()}, "
          f"{run.rate(ok, run.start.min(), run.start.max()) * 4:.0f} sentences/s, p99 {run.p99_ms(ok):.0f} ms")
    assert run.statuses() == {200: len(run.status)}, f"errors: {run.statuses()} {run.failures()}"
    assert not run.failures(), f"answers without an embedding: {run.failures()}"
    assert counted == run.statuses(), f"server counted {counted}, the client received {run.statuses()}"
