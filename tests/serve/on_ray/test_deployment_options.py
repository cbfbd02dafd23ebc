"""A model deployment's Ray Serve options, as a Serve config file sets them (Ray's own config classes)."""

import logging
from types import SimpleNamespace

import pytest
from ray.serve.config import AutoscalingConfig

from serve.on_ray import deployment_options
from serve.on_ray.deployment_options import (
    OWN_POLICY, autoscaling_problem, running_deployment_config, warn_about_ignored_variables,
)


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


def test_a_replica_context_without_the_deployment_config_warns_that_the_guard_is_off(monkeypatch, caplog):
    from ray import serve

    from serve.on_ray.contract import OPTISERVE_LOGGER

    monkeypatch.setattr(serve, "get_replica_context", lambda: SimpleNamespace(app_name="digits"))
    caplog.set_level(logging.WARNING, logger=OPTISERVE_LOGGER)
    assert running_deployment_config() is None
    (record,) = caplog.records
    assert "autoscaling guard is off" in record.getMessage() and "_deployment_config" in record.getMessage()


def test_a_replica_warns_for_each_variable_ray_does_not_take_up(caplog, monkeypatch):
    from serve.on_ray.contract import HAPROXY_THREADS, USER_CODE_THREAD

    caplog.set_level(logging.WARNING, logger="ray.serve.optiserve")
    # a Ray that no longer read RAY_SERVE_HAPROXY_NBTHREAD: its constant at the default (the check itself, against
    # the installed Ray, is test_ray_contract.py's)
    monkeypatch.setattr(deployment_options, "ignored_variables", lambda ours, environ: [
        (HAPROXY_THREADS, "RAY_SERVE_HAPROXY_NBTHREAD is 4, expected 1")] if HAPROXY_THREADS.name in ours else [])
    environ = {HAPROXY_THREADS.name: "1", USER_CODE_THREAD.name: "0", "HOME": "/root"}
    assert warn_about_ignored_variables(environ) == [HAPROXY_THREADS.name]
    (record,) = caplog.records
    assert "Ray ignores RAY_SERVE_HAPROXY_NBTHREAD" in record.getMessage() and "haproxy_threads" in record.getMessage()


def test_a_replica_whose_variables_ray_takes_up_says_nothing(caplog):
    from serve.on_ray.contract import HAPROXY_THREADS, USER_CODE_THREAD

    caplog.set_level(logging.WARNING, logger="ray.serve.optiserve")
    assert warn_about_ignored_variables({HAPROXY_THREADS.name: "1", USER_CODE_THREAD.name: "0"}) == []
    assert not caplog.records
