"""A model deployment's Ray Serve options, as a Serve config file sets them (Ray's own config classes)."""

from types import SimpleNamespace

import pytest
from ray.serve.config import AutoscalingConfig

from serve.on_ray.deployment_options import OWN_POLICY, autoscaling_problem, running_deployment_config


def deployment(**autoscaling) -> SimpleNamespace:
    """What the replica reads: a DeploymentConfig's autoscaling_config (None: a fixed replica count)."""
    return SimpleNamespace(autoscaling_config=AutoscalingConfig(**autoscaling) if autoscaling else None)


def test_rays_default_policy_is_refused_where_requests_bypass_rays_count():
    problem = autoscaling_problem(deployment(min_replicas=1, max_replicas=4), own_http_server=True)
    assert problem is not None
    assert OWN_POLICY in problem and "min_replicas (1)" in problem


@pytest.mark.parametrize("policy", [OWN_POLICY, "serve.on_ray.autoscaling.ongoing_requests_policy"])
def test_optiserves_policy_is_accepted(policy):
    config = deployment(min_replicas=1, max_replicas=4, policy={"policy_function": policy})
    assert autoscaling_problem(config, own_http_server=True) is None


def test_a_custom_policy_is_left_to_its_author():
    custom = {"policy_function": "tests.serve.on_ray.policies:custom"}
    config = deployment(min_replicas=1, max_replicas=4, policy=custom)
    assert autoscaling_problem(config, own_http_server=True) is None


def test_rays_default_policy_is_fine_where_ray_sees_the_requests():
    assert autoscaling_problem(deployment(min_replicas=1, max_replicas=4), own_http_server=False) is None


def test_a_fixed_replica_count_needs_no_policy():
    assert autoscaling_problem(deployment(), own_http_server=True) is None
    assert autoscaling_problem(None, own_http_server=True) is None


def test_outside_a_replica_there_is_no_deployment_config():
    assert running_deployment_config() is None
