"""The HAProxy configuration Ray Serve itself writes, rendered by Ray's own (private) code without a cluster, with
backends and servers named as Ray names them: what the rewrite (serve/on_ray/ingress.py) must keep reading.

Ray's HAProxyManager turns each application into a backend `<protocol>-<app>` and each replica into a server
named after its actor (`SERVE_REPLICA::<app>#<deployment>#<id>`, made safe for HAProxy); the fallback proxy
is a `backup` server. Those functions are called here, so a Ray that renames them shows in the render.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

FIRST_REPLICA_PORT = 30001


@dataclass(frozen=True)
class App:
    name: str
    route_prefix: str
    replicas: int = 1
    fallback: bool = False  # the head node's fallback proxy as a backup server
    routers: bool = False  # ingress request routers (Ray's Lua router in front of the replicas)
    timeout_queue_s: int | None = None


@dataclass(frozen=True)
class RayState:
    """What Ray's HAProxy manager knows when it writes the file."""

    apps: tuple[App, ...] = ()
    draining: bool = False  # health checks forced to fail (Ray's drain)
    metrics: bool = True  # RAY_SERVE_HAPROXY_METRICS_ENABLED
    extra: dict = field(default_factory=dict)  # other HAProxyConfig fields


ROOT = App("optiserve", "/")
DIGITS = App("digits", "/v2/models/digits", replicas=2, fallback=True, timeout_queue_s=5)

STATES = {
    "start-up, no route yet": RayState(),
    "routes, no replica yet": RayState((App("optiserve", "/", 0), App("digits", "/v2/models/digits", 0))),
    "serving": RayState((ROOT, DIGITS)),
    "serving, metrics off": RayState((ROOT, DIGITS), metrics=False),
    "draining": RayState((ROOT, DIGITS), draining=True),
    "ingress request routers": RayState((ROOT, App("digits", "/v2/models/digits", 2, fallback=True, routers=True))),
}


def _manager():
    """Ray's HAProxyManager class (not the actor): its naming methods read nothing of an instance."""
    from ray.serve._private.haproxy import HAProxyManager

    return HAProxyManager.__ray_actor_class__


def backend_name(app: str) -> str:
    """Ray's name for an HTTP application's backend."""
    from ray.serve._private.common import RequestProtocol

    return _manager()._generate_backend_name(_manager(), SimpleNamespace(protocol=RequestProtocol.HTTP, app_name=app))


def replica_server_name(app: str, index: int) -> tuple[str, str]:
    """(HAProxy server name, replica id) of replica `index` of `app`'s deployment, as Ray names them."""
    from ray.serve._private.common import DeploymentID, ReplicaID

    replica = ReplicaID(unique_id=f"r{index}", deployment_id=DeploymentID(name=f"model-{app}", app_name=app))
    full = replica.to_full_id_str()
    return _manager()._generate_server_name(_manager(), SimpleNamespace(name=full)), full


def _backend(app: App, port: int):
    from ray.serve._private.haproxy import BackendConfig, ServerConfig

    servers = []
    for index in range(app.replicas):
        name, replica_id = replica_server_name(app.name, index)
        servers.append(ServerConfig(name=name, host="127.0.0.1", port=port + index, replica_id=replica_id))
    routers = [ServerConfig(name=f"router-{app.name}", host="127.0.0.1", port=port + 900)] if app.routers else []
    fallback = ServerConfig(name="SERVE_PROXY_ACTOR-node", host="127.0.0.1", port=8500) if app.fallback else None
    return BackendConfig(name=backend_name(app.name), path_prefix=app.route_prefix, app_name=app.name,
                         servers=servers, ingress_request_router_servers=routers, fallback_server=fallback,
                         timeout_queue_s=app.timeout_queue_s)


def render(directory: Path, state: RayState) -> Path:
    """Ray's configuration for `state`, written by Ray where its manager would (directory/haproxy.cfg)."""
    from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig
    from ray.serve.config import HTTPOptions

    config = HAProxyConfig(socket_path=str(directory / "admin.sock"), server_state_base=str(directory),
                           server_state_file=str(directory / "state"), metrics_enabled=state.metrics,
                           metrics_socket_path=str(directory / "metrics.sock"),
                           http_options=HTTPOptions(host="127.0.0.1", port=8000),
                           pass_health_checks=not state.draining, **state.extra)
    api = HAProxyApi(cfg=config, config_file_path=str(directory / "haproxy.cfg"))
    port = FIRST_REPLICA_PORT
    backends = {}
    for app in state.apps:
        backends[backend_name(app.name)] = _backend(app, port)
        port += 10
    api.set_backend_configs(backends)
    api._generate_config_file_internal()
    return directory / "haproxy.cfg"
