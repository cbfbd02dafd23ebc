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

IN_FLIGHT_METRIC = "optiserve_in_flight"  # mean requests in flight on a replica's own server since its last report


def ongoing_requests_policy(ctx) -> tuple[float, dict]:
    """Desired replicas for `ctx` (a ray.serve.config.AutoscalingContext): Ray's count plus the replicas' own."""
    replicas = ctx.current_num_replicas
    if replicas == 0:
        return ctx.target_num_replicas, {}
    own = sum((ctx.aggregated_metrics or {}).get(IN_FLIGHT_METRIC, {}).values())
    in_flight = ctx.total_num_requests + own
    return in_flight / ctx.config.get_target_ongoing_requests(), {}
