"""Where a replica's own HTTP server listens (serve/on_ray/replica_http.py): beside Ray's, on real loopback
sockets, without Ray.

A listening socket in this process stands in for Ray's server for the replica: the server finds it in the
port range the environment names and listens just above that range.
"""

from __future__ import annotations

import contextlib
import socket
from typing import AsyncIterator

import pytest

from serve.http.replica_server import ReplicaHTTPServer
from serve.on_ray.ingress import POLICY_VARIABLE, RAY_PORT_RANGE, AdmissionPolicy
from serve.on_ray.replica_http import RAY_KEEP_ALIVE_VARIABLE, keep_alive_timeout_s, listen_beside_ray
from tests.serve.http.test_replica_server import PREFIX, Model, _exchange, _post, in_event_loop, other_routes


def _free_pair() -> tuple[socket.socket, int]:
    """A listening socket on some port P (Ray's stand-in) where P + 1 is free too."""
    for _ in range(50):
        ray = socket.socket()
        ray.bind(("127.0.0.1", 0))
        port = ray.getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                ray.close()
                continue
        ray.listen()
        return ray, port
    raise RuntimeError("no two free ports in a row")


@contextlib.asynccontextmanager
async def serving_beside_ray(model: Model, app=other_routes, policy: AdmissionPolicy | None = None,
                             ) -> AsyncIterator[ReplicaHTTPServer]:
    """The server for `model`, listening beside a stand-in for Ray's (with `policy` in its environment, where
    given); closed afterwards."""
    ray, port = _free_pair()
    server = ReplicaHTTPServer(model.answer, app, PREFIX, 1000)
    environ = {RAY_PORT_RANGE[0]: str(port), RAY_PORT_RANGE[1]: str(port)}
    if policy is not None:
        environ[POLICY_VARIABLE] = policy.to_environment()
    try:
        address = await listen_beside_ray(server, environ, timeout_s=5)
        assert address == ("127.0.0.1", port + 1)
        yield server
    finally:
        await server.close(1)
        ray.close()


@in_event_loop
async def test_it_listens_one_port_above_rays_and_answers_there():
    model = Model()
    async with serving_beside_ray(model) as server:
        [(status, _, _)] = await _exchange(server.address[1], _post(f"{PREFIX}/infer", b"{}"))
    assert status == 200 and len(model.calls) == 1


@in_event_loop
async def test_it_waits_for_rays_server_and_fails_clearly_without_it():
    server = ReplicaHTTPServer(Model().answer, other_routes, PREFIX, 1000)
    with pytest.raises(RuntimeError, match="never listened"):
        await listen_beside_ray(server, {RAY_PORT_RANGE[0]: "1", RAY_PORT_RANGE[1]: "2"}, timeout_s=0.05)


def test_the_keep_alive_timeout_is_rays_where_set_else_its_default():
    assert keep_alive_timeout_s({}) == keep_alive_timeout_s({RAY_KEEP_ALIVE_VARIABLE: "0"}) == 90.0
    assert keep_alive_timeout_s({RAY_KEEP_ALIVE_VARIABLE: "5"}) == 5.0
    with pytest.raises(ValueError, match="expected seconds"):
        keep_alive_timeout_s({RAY_KEEP_ALIVE_VARIABLE: "soon"})
