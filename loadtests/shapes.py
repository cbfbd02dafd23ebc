"""Locust `LoadTestShape`s for step load and spike, chosen with the locustfile's `--shape` option.

The locustfile installs one of these on the environment after options are parsed
(`environment.shape_class`), so the locustfile itself defines no shape class and
plain `--users`/`--run-time` runs keep working.
"""

from __future__ import annotations

from locust import LoadTestShape

from loadtests.profiles import SpikeProfile, StepProfile


class StepLoadShape(LoadTestShape):
    """Users grow in equal steps up to a peak, then hold: finds the load where latency or errors turn."""

    def __init__(self, profile: StepProfile) -> None:
        super().__init__()
        self.profile = profile

    def tick(self) -> tuple[int, float] | None:
        users = self.profile.users(self.get_run_time())
        return None if users is None else (users, float(self.profile.step))


class SpikeShape(LoadTestShape):
    """A steady base load with one sudden burst: shows rejection under the burst and recovery after it."""

    def __init__(self, profile: SpikeProfile) -> None:
        super().__init__()
        self.profile = profile

    def tick(self) -> tuple[int, float] | None:
        users = self.profile.users(self.get_run_time())
        # users start (and stop) all at once: a spike, not a ramp
        return None if users is None else (users, float(max(self.profile.spike, self.profile.base)))
