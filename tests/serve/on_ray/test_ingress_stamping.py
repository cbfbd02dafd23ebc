"""HAProxy stamps each request it receives, with a fresh token per embedded server start
(serve/on_ray/ingress.py), and a replica's own server beside Ray's believes only the stamps that came with it
(serve/http/ingress_stamp.py)."""

import asyncio
import socket
import time
import urllib.request

import pytest

from serve.http.ingress_stamp import RECEIVED_HEADER, TOKEN_HEADER
from serve.on_ray.ingress import POLICY_VARIABLE, AdmissionPolicy, add_fresh_token, rewrite_config
from tests.serve.http.test_ingress_stamp import TOKEN
from tests.serve.http.test_replica_server import PREFIX, Model, _exchange, _post, in_event_loop
from tests.serve.on_ray.test_ingress import RAY_CONFIG, _free_port, _ray_haproxy, _send_until_answered
from tests.serve.on_ray.test_replica_http import serving_beside_ray


def test_each_embedded_server_start_gives_haproxy_a_fresh_token_that_it_adds_to_every_request(tmp_path):
    environment = {POLICY_VARIABLE: AdmissionPolicy(128, 64, 2500, 503).to_environment()}
    tokens = set()
    for _ in range(2):
        fresh = dict(environment)
        add_fresh_token(fresh)
        tokens.add(AdmissionPolicy.from_environment(fresh).ingress_token)
    assert len(tokens) == 2 and all(len(token) >= 24 for token in tokens)
    token = tokens.pop()
    config = rewrite_config(RAY_CONFIG.format(dir=tmp_path, port=8000),
                            AdmissionPolicy(128, 64, 2500, 503, ingress_token=token), {})
    assert f"    http-request set-header {TOKEN_HEADER} {token}  " in config
    no_token = {}
    add_fresh_token(no_token)  # no admission policy: nothing to add it to
    assert no_token == {}
    with pytest.raises(ValueError, match="ingress_token must be letters, digits"):
        AdmissionPolicy(128, 64, 2500, 503, ingress_token="a b")


async def healthy(scope, receive, send):
    """The ASGI app for everything but inference: 200, as HAProxy's health check expects."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@in_event_loop
async def test_the_replicas_own_server_passes_on_only_stamps_that_came_through_haproxy(tmp_path):
    model = Model()  # records the headers each inference request reached it with
    policy = AdmissionPolicy(128, 64, 2500, 503, ingress_token=TOKEN)
    async with serving_beside_ray(model, app=healthy, policy=policy) as server:
        port = server.address[1]
        forged = f"{RECEIVED_HEADER}: {int(time.time() * 1000) - 9000}\r\n"
        for extra in (forged, forged + f"{TOKEN_HEADER}: guess\r\n"):  # a client straight to the replica
            assert (await _exchange(port, _post(f"{PREFIX}/infer", b"{}", extra=extra)))[0][0] == 200
        loop = asyncio.get_running_loop()
        with _ray_haproxy(tmp_path, policy, _free_port(socket.SOCK_DGRAM), digits_port=port) as url:
            request = urllib.request.Request(url, data=b"{}", headers={RECEIVED_HEADER: "1", TOKEN_HEADER: "guess"})
            before_ms = time.time() * 1000
            await loop.run_in_executor(None, _send_until_answered, request)
            after_ms = time.time() * 1000
    direct, via_haproxy = [headers for headers, _, _ in model.calls[:2]], model.calls[-1][0]
    assert all(RECEIVED_HEADER not in headers and TOKEN_HEADER not in headers for headers in direct)
    assert TOKEN_HEADER not in via_haproxy
    assert before_ms - 1 <= int(via_haproxy[RECEIVED_HEADER]) <= after_ms + 1  # HAProxy's stamp, not the client's
