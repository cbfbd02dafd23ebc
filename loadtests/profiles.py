"""Load profiles over time: how many users should run `t` seconds into a test (None: stop).

Pure functions, so they are tested without locust; loadtests/shapes.py wraps them
as locust `LoadTestShape`s. Every profile ends at `run_s`: no load test runs unbounded.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepProfile:
    """Start with `step` users and add `step` more every `step_s` seconds, up to `peak`; hold until `run_s`."""

    step: int
    step_s: float
    peak: int
    run_s: float

    def __post_init__(self) -> None:
        _check_positive(step=self.step, step_s=self.step_s, peak=self.peak, run_s=self.run_s)

    def users(self, t: float) -> int | None:
        if t >= self.run_s:
            return None
        return min(self.peak, self.step * (1 + int(t // self.step_s)))


@dataclass(frozen=True)
class SpikeProfile:
    """`base` users, jumping to `spike` users from `at_s` for `spike_s` seconds, then back; ends at `run_s`."""

    base: int
    spike: int
    at_s: float
    spike_s: float
    run_s: float

    def __post_init__(self) -> None:
        _check_positive(base=self.base, spike=self.spike, spike_s=self.spike_s, run_s=self.run_s)
        if not 0 <= self.at_s < self.run_s:
            raise ValueError(f"spike start: expected 0 <= at_s < run_s ({self.run_s:g}), got {self.at_s:g}")

    def users(self, t: float) -> int | None:
        if t >= self.run_s:
            return None
        return self.spike if self.at_s <= t < self.at_s + self.spike_s else self.base


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name}: expected a positive number, got {value!r}")
