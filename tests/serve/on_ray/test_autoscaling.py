"""serve/on_ray/autoscaling.py: the policy adds the requests on the replicas' own servers to Ray's count, and
says so when no replica reports them."""

import logging

import pytest

from serve.on_ray.autoscaling import IN_FLIGHT_METRIC, UNREPORTED_WARNING_S, ongoing_requests_policy
from serve.on_ray.contract import OPTISERVE_LOGGER


class _Config:
    def get_target_ongoing_requests(self) -> float:
        return 4.0


class _Context:
    """The attributes of Ray's AutoscalingContext the policy reads (serve/on_ray/contract.py lists them)."""

    def __init__(self, replicas: int, rays: float, own: dict | None, state: dict | None = None,
                 now: float = 1000.0) -> None:
        self.deployment_name = "model-digits"
        self.current_num_replicas = replicas
        self.target_num_replicas = replicas
        self.total_num_requests = rays
        self.aggregated_metrics = {IN_FLIGHT_METRIC: own} if own is not None else {}
        self.config = _Config()
        self.policy_state = state or {}
        self.current_time = now


@pytest.mark.parametrize("replicas, rays, own, desired", [
    (2, 0.0, {"a": 6.0, "b": 10.0}, 4.0),  # only the replicas' own servers carry load: 16 / 4
    (2, 8.0, {"a": 0.0, "b": 0.0}, 2.0),  # only Ray's path
    (1, 2.0, {"a": 2.0}, 1.0),
    (2, 0.0, None, 0.0),  # no custom metric reported yet
    (0, 0.0, {}, 0),  # no replica: Ray's own target stands
])
def test_the_autoscaling_policy_counts_the_replicas_own_requests(replicas, rays, own, desired):
    wanted, _ = ongoing_requests_policy(_Context(replicas, rays, own))
    assert wanted == pytest.approx(desired)


def test_a_reported_metric_leaves_no_state():
    assert ongoing_requests_policy(_Context(2, 0.0, {"a": 1.0}, state={"unreported_since": 1.0}))[1] == {}


def test_replicas_that_never_report_their_own_requests_are_warned_about_once(caplog):
    caplog.set_level(logging.WARNING, logger=OPTISERVE_LOGGER)
    _, state = ongoing_requests_policy(_Context(2, 0.0, None, now=1000.0))
    assert state == {"unreported_since": 1000.0} and not caplog.records  # replicas report every few seconds
    _, state = ongoing_requests_policy(_Context(2, 0.0, None, state, now=1000.0 + UNREPORTED_WARNING_S + 1))
    (record,) = caplog.records
    assert "model-digits" in record.getMessage() and "record_autoscaling_stats" in record.getMessage()
    _, state = ongoing_requests_policy(_Context(2, 0.0, None, state, now=1000.0 + 2 * UNREPORTED_WARNING_S))
    assert len(caplog.records) == 1 and state["warned"] is True
