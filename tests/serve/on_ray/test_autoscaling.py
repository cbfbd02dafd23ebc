"""serve/on_ray/autoscaling.py: the policy adds the requests on the replicas' own servers to Ray's count."""

import pytest

from serve.on_ray.autoscaling import IN_FLIGHT_METRIC, ongoing_requests_policy


class _Config:
    def get_target_ongoing_requests(self) -> float:
        return 4.0


class _Context:
    def __init__(self, replicas: int, rays: float, own: dict) -> None:
        self.current_num_replicas = replicas
        self.target_num_replicas = replicas
        self.total_num_requests = rays
        self.aggregated_metrics = {IN_FLIGHT_METRIC: own} if own is not None else {}
        self.config = _Config()


@pytest.mark.parametrize("replicas, rays, own, desired", [
    (2, 0.0, {"a": 6.0, "b": 10.0}, 4.0),  # only the replicas' own servers carry load: 16 / 4
    (2, 8.0, {"a": 0.0, "b": 0.0}, 2.0),  # only Ray's path
    (1, 2.0, {"a": 2.0}, 1.0),
    (2, 0.0, None, 0.0),  # no custom metric reported yet
    (0, 0.0, {}, 0),  # no replica: Ray's own target stands
])
def test_the_autoscaling_policy_counts_the_replicas_own_requests(replicas, rays, own, desired):
    wanted, state = ongoing_requests_policy(_Context(replicas, rays, own))
    assert wanted == pytest.approx(desired) and state == {}


