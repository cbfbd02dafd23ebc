"""The load generator's parts without a server: input distributions, load profiles, the malformed
corpus, the ledger and the SLO check (plain modules; locust itself runs only in child processes)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import orjson
import pytest

from loadtests.corpus import CORPUS, HUGE_BODY_BYTES, HUGE_BODY_LENGTH, bad_request, check_answer
from loadtests.inputs import ZipfRanks, body_factory
from loadtests.ledger import Ledger, slo_violations
from loadtests.profiles import SpikeProfile, StepProfile
from loadtests.served import ServedModels, why_not_served


def _tensor(body: bytes) -> dict:
    return orjson.loads(body)["inputs"][0]


def test_unique_inputs_never_repeat_across_users():
    bodies = [make() for make in (body_factory("digits", "unique", seed=s) for s in range(4)) for _ in range(500)]
    assert len(set(bodies)) == len(bodies)
    tensor = _tensor(bodies[0])
    assert tensor["name"] == "input" and tensor["datatype"] == "FP32" and tensor["shape"] == [1, 64]
    assert len(tensor["data"]) == 64 and all(0 <= v <= 16 for v in tensor["data"])


def test_zipf_inputs_come_from_the_shared_pool_with_popular_ones_first():
    users = [body_factory("digits", "zipf", pool_size=100, zipf_s=1.1, seed=s) for s in range(2)]
    drawn = [make() for make in users for _ in range(5000)]
    counts = Counter(drawn)
    assert len(counts) <= 100
    top = counts.most_common(1)[0][1] / len(drawn)
    expected = 1 / sum(1 / k**1.1 for k in range(1, 101))  # P(rank 1)
    assert abs(top - expected) < 0.03, (top, expected)


def test_zipf_ranks_cover_the_pool_and_reject_bad_parameters():
    ranks = ZipfRanks(10, 0.5, np.random.default_rng(0))
    assert {ranks.next() for _ in range(5000)} == set(range(10))
    with pytest.raises(ValueError, match="pool size"):
        ZipfRanks(0, 1.1, np.random.default_rng(0))


def test_minilm_bodies_follow_the_bytes_contract():
    tensor = _tensor(body_factory("minilm", "unique", rows=3, seed=1)())
    assert tensor["name"] == "text" and tensor["datatype"] == "BYTES" and tensor["shape"] == [3]
    assert all(isinstance(s, str) and len(s.split()) >= 8 for s in tensor["data"])


@pytest.mark.parametrize("args, message", [
    (("resnet", "unique"), "model: expected one of digits, minilm"),
    (("digits", "uniform"), "input distribution: expected one of unique, zipf"),
])
def test_body_factory_names_what_it_expected(args, message):
    with pytest.raises(ValueError, match=message):
        body_factory(*args)


def test_step_and_spike_profiles_are_bounded_in_time():
    step = StepProfile(step=8, step_s=10, peak=20, run_s=60)
    assert [step.users(t) for t in (0, 9.9, 10, 25, 59)] == [8, 8, 16, 20, 20]
    assert step.users(60) is None
    spike = SpikeProfile(base=10, spike=100, at_s=5, spike_s=3, run_s=20)
    assert [spike.users(t) for t in (0, 5, 7.9, 8, 19.9)] == [10, 100, 100, 10, 10]
    assert spike.users(20) is None
    with pytest.raises(ValueError, match="spike start"):
        SpikeProfile(base=1, spike=2, at_s=30, spike_s=1, run_s=20)


def test_every_corpus_case_names_a_4xx_and_its_message():
    valid = orjson.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]})
    assert len({case.name for case in CORPUS}) == len(CORPUS)
    for case in CORPUS:
        assert 400 <= case.status < 500 and case.says, case
        assert case.body() != valid or "Inference-Header-Content-Length" in case.headers, case.name
    assert HUGE_BODY_BYTES - 100 <= len(bad_request("body_100mb").body()) == HUGE_BODY_LENGTH
    with pytest.raises(KeyError, match="no malformed-request case 'nope'"):
        bad_request("nope")


def test_check_answer_wants_the_status_and_a_json_message():
    case = bad_request("wrong_datatype")
    assert check_answer(case, 400, b'{"error":"input \'input\': expected datatype FP32, got INT64"}') is None
    assert "expected status 400, got 200" in check_answer(case, 200, b"{}")
    assert "expected a JSON body" in check_answer(case, 400, b"Bad Request")
    assert "containing" in check_answer(case, 400, b'{"error":"something else"}')


def test_the_100mb_case_wants_a_refusal_before_the_body_is_read():
    case, limit = bad_request("body_100mb"), 32 * 2**20
    on_content_length = f"request body of {HUGE_BODY_LENGTH} bytes exceeds the limit of {limit} bytes"
    after_reading = f"request body exceeds the limit of {limit} bytes"  # what a refusal while reading says
    assert check_answer(case, 413, orjson.dumps({"error": on_content_length})) is None
    assert "containing" in check_answer(case, 413, orjson.dumps({"error": after_reading}))


def test_ledger_counts_every_request_once_and_finds_the_lost():
    ledger = Ledger()
    for status in (200, 200, 503, 0):
        with ledger.track("digits"):
            ledger.answered("digits", status, 1.0, 0.0, error="ConnectionRefusedError" if status == 0 else "")
    with pytest.raises(KeyboardInterrupt):
        with ledger.track("digits"):
            raise KeyboardInterrupt  # cut off, like a user killed at shutdown
    with ledger.track("digits"):
        pass  # sent, never answered
    summary = ledger.summary()
    assert summary["sent"] == {"digits": 6} and summary["answers"] == {"digits": {"0": 1, "200": 2, "503": 1}}
    assert summary["abandoned"] == {"digits": 1} and summary["lost"] == {"digits": 1}
    assert summary["no_answer_reasons"] == {"digits": {"ConnectionRefusedError": 1}}


def test_ledger_writes_one_row_per_answer(tmp_path):
    ledger = Ledger()
    ledger.answered("digits", 200, 2.5, 100.0)
    ledger.answered("bad:empty_body", 400, 1.5, 101.0)
    ledger.write(tmp_path / "run")
    rows = np.load(tmp_path / "run.npz")
    assert rows["status"].tolist() == [200, 400]
    assert rows["names"][rows["name"]].tolist() == ["digits", "bad:empty_body"]
    assert orjson.loads((tmp_path / "run.json").read_bytes())["answers"]["digits"] == {"200": 1}


def test_slo_violations_name_the_objective_missed():
    assert slo_violations(1000, 0, 40.0, 50.0, 0.001) == []
    assert slo_violations(1000, 5, 80.0, 50.0, 0.001) == [
        "p99 latency 80.0 ms exceeds the objective of 50 ms",
        "error ratio 0.0050 (5 of 1000) exceeds the objective of 0.001",
    ]
    assert slo_violations(0, 0, 0.0, None, None) == ["no requests were made"]


def _answering(status: int, body: bytes, asked: list[str] | None = None):
    def fetch(url: str, timeout_s: float) -> tuple[int, bytes]:
        if asked is not None:
            asked.append(url)
        return status, body
    return fetch


def _unreachable(url: str, timeout_s: float) -> tuple[int, bytes]:
    raise ConnectionRefusedError(111, "Connection refused")


@pytest.mark.parametrize("fetch, reason", [
    (_answering(404, b'{"error":"unknown model \'minilm\'; available models: digits"}'),
     "unknown model 'minilm'; available models: digits"),
    (_answering(404, b"<html>Not Found</html>"), "GET /v2/models/minilm answered 404"),
    (_answering(200, b'{"name":"minilm"}'), None),
    (_answering(503, b'{"error":"not running yet"}'), None),  # served, starting: the load test will show it
    (_unreachable, None),  # the load test's own requests will fail and say why
], ids=["kserve 404", "other 404", "served", "starting", "unreachable"])
def test_only_a_404_means_the_model_is_not_served(fetch, reason):
    assert why_not_served("http://127.0.0.1:8000/", "minilm", fetch=fetch) == reason


def test_each_model_is_asked_about_once():
    asked = []
    served = ServedModels(_answering(404, b'{"error":"unknown model"}', asked))
    for _ in range(3):
        assert served.why_not_served("http://127.0.0.1:8000", "minilm") == "unknown model"
    served.why_not_served("http://127.0.0.1:8000", "digits")
    assert asked == ["http://127.0.0.1:8000/v2/models/minilm", "http://127.0.0.1:8000/v2/models/digits"]
