"""serve/http/ingress_stamp.py: a request's wait at the HAProxy ingress, from the stamp HAProxy writes."""

import asyncio
import logging
import socket
import time
import urllib.request

import pytest

from serve.on_ray.ingress import POLICY_VARIABLE, AdmissionPolicy, add_fresh_token, rewrite_config
from serve.http.ingress_stamp import RECEIVED_HEADER, TOKEN_HEADER, IngressProof, IngressStamp, waited_at_ingress
from tests.serve.on_ray.test_ingress import RAY_CONFIG, _free_port, _ray_haproxy, _send_until_answered
from tests.serve.on_ray.test_replica_http import PREFIX, Model, _exchange, _post, in_event_loop, serving


@pytest.mark.parametrize("received_ms, waited", [
    ("1000000", 2.5),  # received 2.5 s before "now"
    (None, None),  # no header: another ingress
    ("soon", None),  # not a stamp
    ("1003000", None),  # in the future: clocks that disagree
    ("990000", None),  # 12.5 s, beyond HAProxy's queue timeout + transfer: clocks that disagree
])
def test_the_wait_at_the_ingress_is_read_from_its_stamp(received_ms, waited):
    assert waited_at_ingress(received_ms, now_s=1002.5, limit_s=11.0) == (None if waited is None else
                                                                            pytest.approx(waited))


def stamped(seconds_ago: float) -> dict[str, str]:
    """Headers with HAProxy's stamp for a request received `seconds_ago` (negative: in the future)."""
    return {RECEIVED_HEADER: str(int((time.time() - seconds_ago) * 1000))}


def test_a_stamp_counts_only_where_haproxy_wrote_it_and_clock_skew_is_reported_once():
    assert IngressStamp(trusted=False, queue_timeout_ms=10_000).waited(stamped(2.0)) is None
    stamps = IngressStamp(trusted=True, queue_timeout_ms=10_000)
    assert stamps.waited(stamped(2.0)) == pytest.approx(2.0, abs=0.05)
    assert stamps.waited({}) is None
    records: list[logging.LogRecord] = []
    recorder = logging.Handler(logging.WARNING)
    recorder.emit = records.append  # the replica's logger, whatever Ray made of its propagation
    logger = logging.getLogger("ray.serve.optiserve")
    logger.addHandler(recorder)
    try:
        assert stamps.waited(stamped(-30.0)) is None and stamps.waited(stamped(-30.0)) is None
    finally:
        logger.removeHandler(recorder)
    (warning,) = [record.getMessage() for record in records]
    assert "clock" in warning and "-30" in warning


TOKEN = "s3cret-Token_1"


@pytest.mark.parametrize("proof, kept", [(TOKEN, True), (None, False), ("guess", False), (TOKEN + "x", False)])
def test_with_a_token_a_stamp_is_kept_only_where_the_token_came_with_it(proof, kept):
    headers = {**stamped(2.0), "x-other": "1"} | ({TOKEN_HEADER: proof} if proof is not None else {})
    IngressProof(TOKEN).keep_proven_stamp(headers)
    assert (RECEIVED_HEADER in headers) is kept and TOKEN_HEADER not in headers and headers["x-other"] == "1"


def test_without_a_token_stamps_are_left_to_the_window_of_a_real_wait():
    headers = {**stamped(2.0), TOKEN_HEADER: "anything"}
    IngressProof("").keep_proven_stamp(headers)
    assert RECEIVED_HEADER in headers and TOKEN_HEADER not in headers


@pytest.mark.parametrize("seconds_ago", [9.0, -5.0])  # would bring its 504 near / put its deadline off
def test_a_clients_own_stamp_moves_its_deadline_neither_way(seconds_ago):
    stamps, proof = IngressStamp(trusted=True, queue_timeout_ms=10_000), IngressProof(TOKEN)
    direct = stamped(seconds_ago)  # a client that reached the replica's own server without HAProxy
    proof.keep_proven_stamp(direct)
    assert stamps.waited(direct) is None  # its deadline counts from the replica, as for a request with no stamp
    ingress = {**stamped(2.0), TOKEN_HEADER: TOKEN}
    proof.keep_proven_stamp(ingress)
    assert stamps.waited(ingress) == pytest.approx(2.0, abs=0.05)


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
    async with serving(model, app=healthy, policy=policy) as server:
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
