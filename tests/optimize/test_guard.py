"""The accuracy guard's search, on a stand-in score (pure logic: which plans it tries, in what order)."""

from pathlib import Path

import pytest

import optimize.guard as guard
from optimize.guard import Score, Tolerance, guarded_int8_plan
from optimize.quantize import Int8Plan

NODES = ["a", "b", "c", "d"]
# How much each node, quantized per-tensor, costs the score; per-channel costs a tenth of that.
COST = {"a": 0.001, "b": 0.05, "c": 0.002, "d": 0.02}


@pytest.fixture
def plans_tried(monkeypatch):
    """Replace the quantizer with a recorder: the score follows from the plan alone."""
    tried: list[Int8Plan] = []

    def fake_quantize(prepared, target, plan=None, nodes=None, **_):
        tried.append(plan)
        WRITTEN[Path(target)] = plan

    monkeypatch.setattr(guard, "quantize_int8_dynamic", fake_quantize)
    return tried


WRITTEN: dict[Path, Int8Plan] = {}  # what the fake quantizer last "wrote" at each path


def score_of_plan(path: Path) -> Score:
    plan = WRITTEN[path]
    loss = sum(
        0 if node in plan.keep_float else COST[node] / (10 if node in plan.per_channel else 1) for node in NODES
    )
    return Score(mean=1 - loss, worst=1 - 2 * loss)


def run(tolerance: Tolerance, tmp_path: Path):
    return guarded_int8_plan(Path("prepared.onnx"), NODES, score_of_plan, tolerance, tmp_path, log=lambda _: None)


def test_a_model_that_quantizes_well_is_quantized_whole(plans_tried, tmp_path):
    result = run(Tolerance(0.9, 0.8), tmp_path)
    assert result.plan == Int8Plan() and result.tried == 1 and plans_tried == [Int8Plan()]


def test_sensitive_nodes_are_ranked_by_measurement_and_get_per_channel_first(plans_tried, tmp_path):
    result = run(Tolerance(0.99, 0.98), tmp_path)
    assert [name for name, _ in result.sensitivity] == ["b", "d", "c", "a"]
    assert result.plan == Int8Plan(per_channel=("b", "d"))
    assert result.score.mean >= 0.99 and result.score.worst >= 0.98


def test_when_per_channel_is_not_enough_the_most_sensitive_stay_float(plans_tried, tmp_path):
    result = run(Tolerance(0.999, 0.998), tmp_path)
    assert result.plan == Int8Plan(per_channel=("c", "a"), keep_float=("b", "d"))


def test_an_impossible_tolerance_yields_no_plan(plans_tried, tmp_path):
    result = run(Tolerance(1.01, 1.01), tmp_path)
    assert result.plan is None
    assert result.tried == 1 + len(NODES) + 2 * len(NODES)
