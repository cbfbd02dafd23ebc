"""Where a replica's own HTTP server (serve/http/replica_server.py) listens: beside Ray's server for the replica.

The server listens on Ray's port for the replica plus a fixed offset, on the same address, so that the HAProxy
rewrite (serve/on_ray/ingress.py) can point each replica's server line at it from Ray's generated configuration
alone, while HAProxy's health checks still go to Ray's port and so still follow Ray's view of the replica (its
drain closes that port).

Ray's port for the replica is found as the one this process listens on inside Ray's replica port range. A
connection quiet for Ray's HTTP keep-alive timeout is closed, as Ray's uvicorn closes its idle ones.
"""

from __future__ import annotations

import asyncio
import time

from serve.http.replica_server import ReplicaHTTPServer, failure_logger
from serve.on_ray.contract import KEEP_ALIVE, RAY_KEEP_ALIVE_DEFAULT
from serve.on_ray.ingress import POLICY_VARIABLE, AdmissionPolicy, port_offset, ray_port_range

FIND_RAY_PORT_EVERY_S = 0.05  # while the replica starts; psutil reads the node's TCP table each time
# Ray's uvicorn keep-alive, where set (not 0). A Serve config's http_options.keep_alive_timeout_s does not reach
# the replica: set this variable on the nodes to change both.
RAY_KEEP_ALIVE_VARIABLE = KEEP_ALIVE.name
RAY_KEEP_ALIVE_DEFAULT_S = float(RAY_KEEP_ALIVE_DEFAULT.value)  # Ray Serve's http_options.keep_alive_timeout_s default


def keep_alive_timeout_s(environ: dict[str, str]) -> float:
    """How long a connection may stay quiet with nothing to answer: Ray's HTTP keep-alive timeout."""
    configured = environ.get(RAY_KEEP_ALIVE_VARIABLE, "").strip()
    try:
        seconds = float(configured) if configured else 0.0
    except ValueError:
        raise ValueError(f"{RAY_KEEP_ALIVE_VARIABLE}: expected seconds (a number), got {configured!r}") from None
    return seconds if seconds > 0 else RAY_KEEP_ALIVE_DEFAULT_S


def ray_listening_port(port_range: tuple[int, int]) -> tuple[str, int] | None:
    """The (address, port) this process listens on inside Ray's replica port range: Ray's server for it."""
    import psutil

    first, last = port_range
    for connection in psutil.Process().net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and first <= connection.laddr.port <= last:
            return connection.laddr.ip, connection.laddr.port
    return None


async def listen_beside_ray(server: ReplicaHTTPServer, environ: dict[str, str],
                            timeout_s: float = 120.0) -> tuple[str, int]:
    """Wait for Ray's HTTP server in this replica, then have `server` listen on its port + the offset, same
    address, believing the stamps that carry the admission policy's ingress token."""
    port_range = ray_port_range(environ)
    deadline = time.monotonic() + timeout_s
    while (ray := ray_listening_port(port_range)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"Ray's HTTP server for this replica never listened in {port_range} "
                               f"within {timeout_s:g} s")
        await asyncio.sleep(FIND_RAY_PORT_EVERY_S)
    return await server.listen(ray[0], ray[1] + port_offset(environ), ingress_token(environ))


log_failure = failure_logger("this replica's HTTP server did not start")


def ingress_token(environ: dict[str, str]) -> str:
    """The token HAProxy adds to each request where the admission policy has one, else ""."""
    return AdmissionPolicy.from_environment(environ).ingress_token if environ.get(POLICY_VARIABLE) else ""


def replica_http_enabled(environ: dict[str, str]) -> bool:
    """Whether this node's HAProxy sends model traffic to the replicas' own servers (serve/on_ray/ingress.py's
    policy)."""
    return bool(environ.get(POLICY_VARIABLE)) and AdmissionPolicy.from_environment(environ).replica_http
