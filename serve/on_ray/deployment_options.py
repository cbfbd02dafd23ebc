"""A model deployment's Ray Serve options that a Serve config file sets, checked where they take effect.

A config file's per-deployment options (`autoscaling_config` above all) reach a replica through Ray, not
through optiserve's settings, so the replica checks them itself when it starts. One is refused:

- **Ray's default autoscaling policy with the replica's own HTTP server.** Ray's default policy scales on
  the requests Ray itself sees in flight; requests HAProxy sends to the replica's own server
  (serve/on_ray/replica_http.py) never cross Ray's request path, so that policy would see none and hold the
  deployment at `min_replicas` under any load, silently. optiserve's policy (serve/on_ray/autoscaling.py) counts
  them. A custom policy of the user's own is left alone: it may count them too.

Only a starting replica checks: Ray 2.60 counts deployments' autoscaling policies in an application's code
version, so a config that changes or drops the policy line rebuilds the application and starts new replicas
(never a lightweight update of running ones). With deploy/serve_config.yaml's `max_surge_percent` the old
replicas keep serving while the new ones are refused.
"""

from __future__ import annotations

import logging
from typing import Any

from serve.on_ray.contract import DEPLOYMENT_CONFIG, ENVIRONMENT, OPTISERVE_LOGGER, ignored_variables

logger = logging.getLogger(OPTISERVE_LOGGER)
OWN_POLICY = "serve.on_ray.autoscaling:ongoing_requests_policy"


def running_deployment_config() -> Any | None:
    """This replica's Ray Serve DeploymentConfig (with the config file's overrides), or None outside a replica.

    Ray 2.60 exposes it only as ReplicaContext._deployment_config (serve/on_ray/contract.py): this is the one
    place that reads it. A Ray without that field gets None, no check, rather than a failed start, and a
    warning that says the guard is off.
    """
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        context = serve.get_replica_context()
    except RayServeException:
        return None
    if not hasattr(context, DEPLOYMENT_CONFIG.value):
        logger.warning("optiserve: the autoscaling guard is off: Ray's ReplicaContext has no %r, so this replica "
                       "cannot check its deployment's autoscaling_config (serve/on_ray/contract.py)",
                       DEPLOYMENT_CONFIG.value)
        return None
    return getattr(context, DEPLOYMENT_CONFIG.value)


def autoscaling_problem(deployment_config: Any | None, own_http_server: bool) -> str | None:
    """Why this deployment's autoscaling could not work as configured, or None when it can."""
    autoscaling = getattr(deployment_config, "autoscaling_config", None)
    if not own_http_server or autoscaling is None or not autoscaling.policy.is_default_policy_function():
        return None
    return (
        f"autoscaling_config: expected policy: {{policy_function: {OWN_POLICY}}}, got Ray's default policy. "
        "Requests reach this replica on its own HTTP server, which Ray's default policy does not count, so the "
        f"deployment would stay at min_replicas ({autoscaling.min_replicas}) under any load. Add the policy line "
        "as deploy/serve_config.yaml does"
    )


def warn_about_ignored_variables(environ: dict[str, str]) -> list[str]:
    """Warn, in a replica, for each variable of the contract set on this node that Ray does not take up (a Serve
    config deployment sets them in its manifests, where the embedded server's start-up check never runs);
    returns the names."""
    ours = {variable.name: environ[variable.name] for variable in ENVIRONMENT if variable.name in environ}
    ignored = ignored_variables(ours, environ)
    for variable, why in ignored:
        logger.warning("optiserve: Ray ignores %s (%s), so %s is off (serve/on_ray/contract.py)",
                       variable.name, why, variable.feature)
    return [variable.name for variable, _ in ignored]
