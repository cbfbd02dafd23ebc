"""Judging candidates against fp32 and choosing the one to ship (pure logic, on made-up measurements)."""

import pytest

from optimize.classifier import score_drop_criterion
from optimize.embedding import cosine_criterion
from optimize.guard import Tolerance
from optimize.manifest import Candidate, Measurement
from optimize.selection import choose_candidate, describe_candidate, judge
from optimize.settings import OptimizeSettings
from optimize.speed import Speed

TOP1 = score_drop_criterion(OptimizeSettings(accuracy_tolerance=0.01), "top-1")


def _measurement(accuracy, b1, b32, worst=None):
    return Measurement(accuracy=accuracy, worst=worst, latency_ms={1: b1, 32: b32}, size_bytes=100)


FASTER = Speed(0.8, 0.75, 0.85, faster=True, slower_at=())
LEVEL = Speed(0.98, 0.93, 1.03, faster=False, slower_at=())
SLOWER_AT_1 = Speed(0.8, 0.7, 0.9, faster=True, slower_at=(1,))
STOPPED = Speed(200.0, 200.0, 200.0, faster=False, slower_at=(1,), stopped="200.0x fp32's latency at batch size 1")


@pytest.mark.parametrize(
    "accuracy, int8_speed, accepted, reason",
    [
        (0.95, FASTER, True, "within 0.01, faster than fp32: 0.80x fp32's latency (blocks 0.75-0.85x)"),
        (0.90, FASTER, False, "exceeds tolerance"),
        (0.95, SLOWER_AT_1, False, "slower than fp32 on this CPU at batch size 1 in every block"),
        (0.95, LEVEL, False, "not faster than fp32 beyond the measured spread: 0.98x"),
        (0.95, STOPPED, False, "clearly slower than fp32 on this CPU: 200.0x"),
    ],
)
def test_int8_ships_only_when_accurate_and_faster_beyond_the_spread(accuracy, int8_speed, accepted, reason):
    measured = {"fp32": _measurement(0.955, 1.0, 10.0), "int8": _measurement(accuracy, 0.8, 8.0)}
    verdict = judge(measured, TOP1, OptimizeSettings(), {"int8": int8_speed})[1]
    assert verdict.accepted is accepted
    assert reason in verdict.reason


def test_sparse_never_ships_on_speed():
    measured = {"fp32": _measurement(0.9, 1.0, 10.0), "sparse": _measurement(0.9, 0.6, 6.0)}
    verdict = judge(measured, TOP1, OptimizeSettings(), {"sparse": FASTER})[1]
    assert not verdict.accepted and "unstructured zeros run at full cost on a dense runtime" in verdict.reason


def test_a_score_raised_by_fine_tuning_is_flagged_not_called_a_negative_drop():
    measured = {"fp32": _measurement(0.856, 1.0, 10.0), "pruned": _measurement(0.987, 0.5, 5.0)}
    verdict = judge(measured, TOP1, OptimizeSettings(), {"pruned": FASTER})[1]
    assert verdict.accepted
    assert "rose 0.1310 above fp32's" in verdict.reason and "fine-tuning, not compression" in verdict.reason
    assert "drop -" not in verdict.reason


@pytest.mark.parametrize("int8_score, accepted", [(0.497, True), (0.49, False)])
def test_a_relative_tolerance_is_a_fraction_of_the_fp32_score(int8_score, accepted):
    fp32, int8 = _measurement(0.5, 1.0, 10.0), _measurement(int8_score, 0.9, 9.0)
    settings = OptimizeSettings(accuracy_tolerance=0.01, accuracy_tolerance_relative=True)  # 1% of 0.5: 0.005
    verdict = judge({"fp32": fp32, "int8": int8}, score_drop_criterion(settings, "f1"), settings, {"int8": FASTER})[1]
    assert verdict.accepted is accepted
    assert verdict.reason.startswith("f1 drop") and "1.00% of fp32's 0.5000" in verdict.reason


def test_embedding_candidates_are_judged_on_cosine_then_speed():
    def measured(mean, worst, ms):
        return _measurement(mean, ms, ms * 20, worst=worst)

    verdicts = {c.name: c for c in judge({
        "fp32": measured(1.0, 1.0, 2.0), "close_fast": measured(0.995, 0.99, 1.0),
        "far": measured(0.96, 0.93, 1.0), "close_slow": measured(0.995, 0.99, 3.0),
    }, cosine_criterion(Tolerance(0.99, 0.98)), OptimizeSettings(),
        {"close_fast": FASTER, "far": FASTER, "close_slow": SLOWER_AT_1})}
    assert verdicts["close_fast"].accepted
    assert not verdicts["far"].accepted and "outside tolerance" in verdicts["far"].reason
    assert not verdicts["close_slow"].accepted and "slower than fp32" in verdicts["close_slow"].reason
    assert "(worst 0.9900)" in describe_candidate(verdicts["close_fast"])


@pytest.mark.parametrize("criterion", [TOP1, cosine_criterion(Tolerance(0.99, 0.98))], ids=["top-1", "cosine"])
def test_gpu_target_judges_on_accuracy_only_and_ships_fp16_even_if_slower_on_this_cpu(criterion):
    """Both kinds: a GPU variant's CPU latency says nothing about the GPU."""
    measured = {"fp32": _measurement(1.0, 1.0, 10.0, 1.0), "fp16": _measurement(0.999, 3.0, 30.0, 0.995)}
    settings = OptimizeSettings(target="gpu")
    candidates = judge(measured, criterion, settings)
    assert candidates[1].accepted and "CPU latency is no measure of GPU speed" in candidates[1].reason
    assert choose_candidate(candidates, settings, print) == "fp16"


def test_cpu_target_rejects_fp16_that_is_slower_on_this_cpu():
    measured = {"fp32": _measurement(0.97, 1.0, 10.0), "fp16": _measurement(0.97, 1.1, 10.5)}
    fp16 = judge(measured, TOP1, OptimizeSettings(candidates=("fp16",)), {"fp16": SLOWER_AT_1})[1]
    assert not fp16.accepted and "slower than fp32 on this CPU" in fp16.reason


def test_gpu_target_falls_back_to_fp32_when_fp16_loses_accuracy():
    measured = {"fp32": _measurement(0.97, 1.0, 10.0), "fp16": _measurement(0.90, 0.5, 5.0)}
    settings = OptimizeSettings(target="gpu")
    candidates = judge(measured, TOP1, settings)
    assert not candidates[1].accepted and choose_candidate(candidates, settings, print) == "fp32"


def measured(ms: float, deviation: float, accuracy: float = 0.97) -> Measurement:
    return Measurement(accuracy=accuracy, latency_ms={1: ms, 32: ms * 10}, size_bytes=1, batch_deviation=deviation)


CHOICES = [
    Candidate(name="fp32", measurement=measured(1.0, 0.0), accepted=True, reason="baseline"),
    Candidate(name="int8_dynamic", measurement=measured(0.4, 0.02), accepted=True, reason="ok"),
    Candidate(name="int8_static", measurement=measured(0.6, 0.0), accepted=True, reason="ok"),
    Candidate(name="pruned", measurement=measured(0.1, 0.0), accepted=False, reason="accuracy"),
]


def test_in_auto_mode_batch_invariant_candidates_win_unless_deviation_is_accepted():
    auto = OptimizeSettings(auto=True)
    assert choose_candidate(CHOICES, auto, log=lambda _: None) == "int8_static"
    assert choose_candidate(CHOICES[:2], auto, log=lambda _: None) == "fp32"
    accepting = OptimizeSettings(auto=True, accept_batch_deviation=True)
    assert choose_candidate(CHOICES, accepting, log=lambda _: None) == "int8_dynamic"


def test_candidates_named_by_the_user_compete_on_speed_alone():
    assert choose_candidate(CHOICES, OptimizeSettings(), log=lambda _: None) == "int8_dynamic"
