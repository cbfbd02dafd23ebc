"""The accuracy guard: find an int8 plan that holds the tolerance, by measurement.

1. Quantize everything (one scale per tensor). If the score holds, done.
2. Otherwise measure each weight node's sensitivity: quantize it alone and
   see how far the score falls.
3. Walk down that ranking: give the most sensitive nodes one scale per
   output channel (the model stays small), then, if that is not enough, keep
   them in float, re-scoring after each change, until the tolerance holds.
4. If even that fails, there is no int8 candidate: the caller ships float.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from optimize.quantize import Int8Plan, quantize_int8_dynamic

Log = Callable[[str], None]


@dataclass(frozen=True)
class Score:
    """A candidate's metric: the mean over the validation data and its worst example."""

    mean: float
    worst: float


@dataclass(frozen=True)
class Tolerance:
    mean_at_least: float
    worst_at_least: float

    def holds(self, score: Score) -> bool:
        return score.mean >= self.mean_at_least and score.worst >= self.worst_at_least

    def __str__(self) -> str:
        return f"mean >= {self.mean_at_least}, worst >= {self.worst_at_least}"


@dataclass(frozen=True)
class GuardResult:
    plan: Int8Plan | None  # None: no plan within tolerance
    score: Score
    sensitivity: tuple[tuple[str, float], ...]  # node, mean score with only it quantized; most sensitive first
    tried: int


def guarded_int8_plan(
    prepared: Path, nodes: list[str], score_model: Callable[[Path], Score], tolerance: Tolerance,
    work_dir: Path, log: Log = print,
) -> GuardResult:
    trial = work_dir / "guard-trial.onnx"

    def score_plan(plan: Int8Plan) -> Score:
        quantize_int8_dynamic(prepared, trial, plan=plan, nodes=nodes)
        return score_model(trial)

    plan = Int8Plan()
    score = score_plan(plan)
    log(f"int8, every weight node per-tensor: mean {score.mean:.4f}, worst {score.worst:.4f} ({tolerance})")
    if tolerance.holds(score):
        return GuardResult(plan, score, (), 1)
    ranking = _sensitivity(prepared, nodes, score_model, trial, log)
    tried = 1 + len(ranking)
    for plan in _escalating_plans([name for name, _ in ranking]):
        score = score_plan(plan)
        tried += 1
        log(f"int8, {plan.describe()}: mean {score.mean:.4f}, worst {score.worst:.4f}")
        if tolerance.holds(score):
            return GuardResult(plan, score, tuple(ranking), tried)
    return GuardResult(None, score, tuple(ranking), tried)


def _sensitivity(prepared: Path, nodes: list[str], score_model, trial: Path, log: Log) -> list[tuple[str, float]]:
    """Each node quantized alone (the rest float): the mean score then, most sensitive (lowest) first."""
    scores = []
    for index, node in enumerate(nodes, 1):
        quantize_int8_dynamic(prepared, trial, plan=Int8Plan(keep_float=tuple(n for n in nodes if n != node)),
                              nodes=nodes)
        scores.append((node, score_model(trial).mean))
        if index % 10 == 0 or index == len(nodes):
            log(f"sensitivity: {index}/{len(nodes)} weight nodes measured")
    return sorted(scores, key=lambda item: item[1])


def _escalating_plans(ranked: list[str]):
    """Per-channel for the top 1, 2, ... nodes; then float for the top 1, 2, ... (the rest per-channel)."""
    for count in range(1, len(ranked) + 1):
        yield Int8Plan(per_channel=tuple(ranked[:count]))
    for count in range(1, len(ranked) + 1):
        yield Int8Plan(per_channel=tuple(ranked[count:]), keep_float=tuple(ranked[:count]))
