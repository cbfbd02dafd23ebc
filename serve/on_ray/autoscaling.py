"""Ray Serve autoscaling that counts requests on the replicas' own HTTP servers (serve/on_ray/replica_http.py).

Ray's default policy scales on the requests Ray itself sees in flight. Requests that HAProxy sends to a
replica's own server never cross Ray's request path, so each replica reports them as a custom autoscaling
metric (`ModelServer.record_autoscaling_stats`), and this policy adds them to Ray's count before the same
rule as Ray's default: as many replicas as keep `target_ongoing_requests` in flight on each. Ray applies
min/max replicas, the scaling factors and the up/down delays around any policy, this one included.

Use it in a deployment's autoscaling_config (deploy/serve_config.yaml):

    autoscaling_config:
      policy: {policy_function: serve.on_ray.autoscaling:ongoing_requests_policy}
"""

from __future__ import annotations

import logging
import time

from serve.on_ray.contract import AUTOSCALING_STATS, OPTISERVE_LOGGER

IN_FLIGHT_METRIC = "optiserve_in_flight"  # mean requests in flight on a replica's own server since its last report
UNREPORTED_WARNING_S = 60.0  # replicas report every few seconds: this long without, Ray no longer asks them
logger = logging.getLogger(OPTISERVE_LOGGER)


def ongoing_requests_policy(ctx) -> tuple[float, dict]:
    """Desired replicas for `ctx` (a ray.serve.config.AutoscalingContext): Ray's count plus the replicas' own."""
    replicas = ctx.current_num_replicas
    if replicas == 0:
        return ctx.target_num_replicas, {}
    own_by_replica = (ctx.aggregated_metrics or {}).get(IN_FLIGHT_METRIC)
    state = {} if own_by_replica is not None else _unreported(ctx)
    in_flight = ctx.total_num_requests + sum((own_by_replica or {}).values())
    return in_flight / ctx.config.get_target_ongoing_requests(), state


def _unreported(ctx) -> dict:
    """The policy's state while no running replica has reported IN_FLIGHT_METRIC: since when, and whether it has
    warned. Past UNREPORTED_WARNING_S it warns once: the count of the replicas' own requests is off."""
    state = dict(ctx.policy_state or {})
    now = ctx.current_time or time.time()
    since = state.setdefault("unreported_since", now)
    if now - since > UNREPORTED_WARNING_S and not state.get("warned"):
        logger.warning("optiserve: deployment %s: no replica has reported %r through Ray's %r hook for %.0f s, so "
                       "this policy counts only the requests Ray sees (serve/on_ray/contract.py)",
                       ctx.deployment_name, IN_FLIGHT_METRIC, AUTOSCALING_STATS.value, now - since)
        state["warned"] = True
    return state
