"""Everything that knows Ray Serve: the deployment adapter, root app, builders, runner, the HAProxy ingress
rewrite, the replica's HTTP server beside Ray's port, the autoscaling policy, deployment options and Ray's
metrics backend. contract.py lists what of Ray's all of it relies on without Ray promising it
(tests/serve/on_ray/test_ray_contract.py checks the list against the installed Ray).

The only subpackage of serve/ that imports `ray` (tests/serve/test_layering.py checks it). This file imports
nothing, so that `optiserve-haproxy` (serve/on_ray/ingress.py) starts light.
"""
