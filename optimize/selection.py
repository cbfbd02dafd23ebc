"""Which candidate ships: judge each against fp32, choose among the accepted, describe the verdicts.

The same rules for every kind of model; a kind brings only its accuracy
criterion (a score drop for classifiers, cosine to fp32 for embeddings).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from optimize.manifest import Candidate, Measurement
from optimize.settings import NO_SPEEDUP_CANDIDATES, OptimizeSettings
from optimize.speed import Speed

# accuracy_problem(measured, baseline) -> (what is wrong, or None; what held)
AccuracyProblem = Callable[[Measurement, Measurement], tuple[str | None, str]]


def judge(measurements: dict[str, Measurement], accuracy_problem: AccuracyProblem,
          settings: OptimizeSettings, speeds: dict[str, Speed] | None = None) -> list[Candidate]:
    """Every candidate against fp32: rejected if `accuracy_problem` names a problem; for a CPU target also
    unless `speeds` shows it faster beyond the measured spread and slower at no batch size (optimize/speed.py).

    For a GPU target latency plays no part: it was measured on this CPU, where
    fp16 runs through casts, and says nothing about the GPU.
    """
    baseline = measurements["fp32"]
    candidates = [Candidate(name="fp32", measurement=baseline, accepted=True, reason="baseline")]
    for name, measured in measurements.items():
        if name == "fp32":
            continue
        problem, held = accuracy_problem(measured, baseline)
        if problem:
            verdict = (False, problem)
        elif settings.target != "cpu":
            verdict = (True, f"{held}; GPU target: judged on accuracy, CPU latency is no measure of GPU speed")
        else:
            verdict = _speed_verdict(name, held, speeds[name], settings)
        candidates.append(Candidate(name=name, measurement=measured, accepted=verdict[0], reason=verdict[1]))
    return candidates


def _speed_verdict(name: str, held: str, speed: Speed, settings: OptimizeSettings) -> tuple[bool, str]:
    if speed.stopped:
        return False, f"{held}, but clearly slower than fp32 on this CPU: {speed.stopped}"
    if name in NO_SPEEDUP_CANDIDATES:
        return False, (f"{held}, but unstructured zeros run at full cost on a dense runtime ({speed.describe()}): "
                       "its gain is a smaller compressed file only")
    if speed.slower_at:
        return False, (f"{held}, but slower than fp32 on this CPU at batch size "
                       f"{', '.join(map(str, speed.slower_at))} in every block of runs")
    if not speed.faster:
        return False, (f"{held}, but not faster than fp32 beyond the measured spread: {speed.describe()}; "
                       f"needs at most {1 - settings.min_speedup:.2f}x and below 1x in every block")
    return True, f"{held}, faster than fp32: {speed.describe()}"


def choose_candidate(candidates: list[Candidate], settings: OptimizeSettings, log: Callable[[str], None]) -> str:
    """The accepted candidate with the lowest latency relative to fp32 (geometric mean over batch sizes).

    In auto mode, unless the user accepts batch deviation, batch-invariant
    candidates are preferred: a cached answer must not depend on what it was
    batched with.
    fp32 is always accepted and batch-invariant, so there is always a choice.
    A GPU target ships its GPU variant (fp16) when accepted: CPU timings do not rank GPU variants.
    """
    if settings.target == "gpu":
        from optimize.gpu import gpu_choice

        return gpu_choice(candidates)
    accepted = [c for c in candidates if c.accepted]
    invariant = [c for c in accepted if (c.measurement.batch_deviation or 0) < settings.batch_invariant_below]
    baseline = candidates[0].measurement.latency_ms

    def relative_latency(candidate: Candidate) -> float:
        if candidate.measurement.relative_latency is not None:
            return candidate.measurement.relative_latency
        return float(np.exp(np.mean([np.log(candidate.measurement.latency_ms[b] / baseline[b]) for b in baseline])))

    fastest = min(accepted, key=relative_latency)
    if settings.accept_batch_deviation or not settings.auto:  # candidates named by the user: the fastest
        return fastest.name
    best = min(invariant or accepted, key=relative_latency)
    if fastest is not best:
        log(f"{fastest.name} is faster but its answers move with their batch (deviation "
            f"{fastest.measurement.batch_deviation:.2e}); shipping batch-invariant {best.name} instead "
            "(accept_batch_deviation allows it)")
    return best.name


def describe_candidate(candidate: Candidate) -> str:
    m = candidate.measurement
    latency = ", ".join(f"b{b} {ms:.3f} ms" for b, ms in m.latency_ms.items())
    status = "accepted" if candidate.accepted else "rejected"
    score = f"{m.accuracy:.4f}" if m.worst is None else f"{m.accuracy:.4f} (worst {m.worst:.4f})"
    return (f"{candidate.name:13s} score {score}  {latency}  {m.size_bytes / 1024:.1f} KiB  "
            f"{status}: {candidate.reason}")
