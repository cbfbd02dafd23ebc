"""A replica's own HTTP server (serve/http/replica_server.py) on real loopback sockets, without Ray."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
from typing import AsyncIterator

import pytest

from serve.http.asgi import Reply
from serve.http.http_messages import HTTPLimits, response_bytes
from serve.http.replica_server import ReplicaHTTPServer

PREFIX = "/v2/models/digits"


def in_event_loop(test):
    """Run an async test function on a fresh event loop (asyncio.run)."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))
    return run


class Model:
    """`answer` for inference POSTs: echoes what it got; `hold` makes it wait for a signal."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, bytes, str | None]] = []
        self.hold: asyncio.Event | None = None
        self.cancelled = 0
        self.refused: list[int] = []  # statuses of requests the server refused before reading them

    async def answer(self, headers, read_body, version):
        body = await read_body(1 << 20)
        self.calls.append((headers, body, version))
        try:
            if self.hold is not None:
                await self.hold.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return Reply(200, json.dumps({"got": body.decode(), "version": version}).encode(), headers={"X-Cache": "miss"})


async def other_routes(scope, receive, send):
    """The ASGI app for everything that is not inference: echoes its scope."""
    message = await receive()
    body = json.dumps({"method": scope["method"], "path": scope["path"], "root_path": scope["root_path"],
                       "query": scope["query_string"].decode(), "body": message["body"].decode()}).encode()
    await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def model() -> Model:
    return Model()


@contextlib.asynccontextmanager
async def serving(model: Model, max_body_bytes: int = 1000, app=other_routes, keep_alive_timeout_s: float = 90.0,
                  limits: HTTPLimits = HTTPLimits(), ingress_token: str = "") -> AsyncIterator[ReplicaHTTPServer]:
    """The server for `model`, listening on a free loopback port; closed afterwards."""
    server = ReplicaHTTPServer(model.answer, app, PREFIX, max_body_bytes, on_refused=model.refused.append,
                               keep_alive_timeout_s=keep_alive_timeout_s, limits=limits)
    try:
        address = await server.listen("127.0.0.1", 0, ingress_token)
        assert address[0] == "127.0.0.1" and address[1] > 0
        yield server
    finally:
        await server.close(1)


async def _exchange(port: int, raw: bytes, answers: int = 1) -> list[tuple[int, dict[str, str], bytes]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    out = [await _read_response(reader) for _ in range(answers)]
    writer.close()
    return out


async def _read_response(reader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Thing: A\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@in_event_loop
async def test_an_inference_post_reaches_the_model_and_gets_one_whole_answer(model):
    async with serving(model) as server:
        [(status, headers, body)] = await _exchange(server.address[1], _post(f"{PREFIX}/infer", b'{"a":1}'))
        assert status == 200 and json.loads(body) == {"got": '{"a":1}', "version": None}
        assert headers["x-cache"] == "miss" and headers["content-type"] == "application/json" and "date" in headers
        seen_headers, _, _ = model.calls[0]
        assert seen_headers["x-thing"] == "A"  # header names lower-cased, as the ASGI path gave them
        [(status, _, body)] = await _exchange(server.address[1], _post(f"{PREFIX}/versions/3/infer", b"{}"))
        assert status == 200 and json.loads(body)["version"] == "3"


@in_event_loop
async def test_other_requests_go_to_the_asgi_app_with_rays_scope(model):
    async with serving(model) as server:
        raw = f"GET {PREFIX}/ready?x=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        [(status, _, body)] = await _exchange(server.address[1], raw)
        assert status == 201
        assert json.loads(body) == {"method": "GET", "path": f"{PREFIX}/ready", "root_path": PREFIX,
                                    "query": "x=1", "body": ""}
        [(status, _, body)] = await _exchange(server.address[1], _post(f"{PREFIX}/infer/more", b"zz"))
        assert status == 201 and json.loads(body)["body"] == "zz" and not model.calls


@in_event_loop
async def test_keep_alive_and_pipelined_requests_are_answered_in_order(model):
    async with serving(model) as server:
        raw = b"".join(_post(f"{PREFIX}/infer", f'"{i}"'.encode()) for i in range(3))
        answers = await _exchange(server.address[1], raw, answers=3)
        assert [json.loads(body)["got"] for _, _, body in answers] == ['"0"', '"1"', '"2"']


@in_event_loop
async def test_a_body_over_the_limit_gets_413_and_the_connection_closes(model):
    async with serving(model, max_body_bytes=1000) as server:
        declared = _post(f"{PREFIX}/infer", b"x" * 1001)
        [(status, headers, body)] = await _exchange(server.address[1], declared)
        assert status == 413 and "exceeds the limit of 1000 bytes" in json.loads(body)["error"]
        assert headers["connection"] == "close"
        chunked = (f"POST {PREFIX}/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "258\r\n" + "y" * 600 + "\r\n258\r\n" + "y" * 600 + "\r\n0\r\n\r\n").encode()
        [(status, _, body)] = await _exchange(server.address[1], chunked)
        assert status == 413 and "request body exceeds the limit" in json.loads(body)["error"]
        assert not model.calls and model.refused == [413, 413]  # each counted once


@in_event_loop
async def test_a_malformed_request_gets_400(model):
    async with serving(model) as server:
        [(status, _, body)] = await _exchange(server.address[1], b"NOT HTTP AT ALL\r\n\r\n")
        assert status == 400 and "malformed HTTP/1.1 request" in json.loads(body)["error"]
        assert model.refused == [400]


@in_event_loop
async def test_expect_100_continue_is_answered_before_the_body(model):
    async with serving(model) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        writer.write(f"POST {PREFIX}/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     "Content-Length: 2\r\n\r\n".encode())
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}")
        status, _, _ = await _read_response(reader)
        assert status == 200
        writer.close()


@in_event_loop
async def test_a_client_that_disconnects_cancels_its_request(model):
    model.hold = asyncio.Event()
    async with serving(model) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        writer.write(_post(f"{PREFIX}/infer", b"{}"))
        while not model.calls:
            await asyncio.sleep(0.01)
        assert server.in_flight == 1
        writer.close()
        for _ in range(100):
            if model.cancelled:
                break
            await asyncio.sleep(0.01)
        assert model.cancelled == 1 and server.in_flight == 0


@in_event_loop
async def test_close_stops_listening_and_waits_for_requests_in_flight(model):
    model.hold = asyncio.Event()
    async with serving(model) as server:
        port = server.address[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post(f"{PREFIX}/infer", b"{}"))
        while not model.calls:
            await asyncio.sleep(0.01)
        closing = asyncio.create_task(server.close(timeout_s=5))
        await asyncio.sleep(0.1)
        assert not closing.done()  # still waiting for the request
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        model.hold.set()
        status, _, _ = await _read_response(reader)
        assert status == 200 and await closing == 0
        writer.close()


def test_the_load_reported_is_the_time_weighted_mean_in_flight(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("serve.http.replica_server.time.monotonic", lambda: clock[0])
    server = ReplicaHTTPServer(Model().answer, other_routes, PREFIX, 1000)
    server.load_since_last_report()  # a new period starts at 100 s
    server.request_started()  # 1 in flight for 2 s
    clock[0] = 102.0
    server.request_started()  # 2 in flight for 1 s
    clock[0] = 103.0
    server.request_finished()
    server.request_finished()  # 0 for 1 s
    clock[0] = 104.0
    assert server.load_since_last_report() == pytest.approx((1 * 2 + 2 * 1) / 4)
    clock[0] = 105.0
    assert server.load_since_last_report() == 0.0


def test_the_response_carries_its_length_and_closes_when_asked():
    raw = response_bytes(504, [(b"content-type", b"application/json"), (b"content-length", b"999")], b"{}", False)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n") and body == b"{}"
    assert b"content-length: 2\r\n" in head + b"\r\n" and b"999" not in head and b"connection: close" in head


@in_event_loop
async def test_a_failing_handler_still_gets_one_json_500(model):
    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    async with serving(model, app=broken) as server:
        [(status, _, body)] = await _exchange(server.address[1], f"GET {PREFIX} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 500 and "boom" in json.loads(body)["error"]


@in_event_loop
async def test_head_gets_the_headers_without_a_body_and_the_connection_stays_in_step(model):
    async with serving(model) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        writer.write(f"HEAD {PREFIX}/ready HTTP/1.1\r\nHost: x\r\n\r\nGET {PREFIX}/ready HTTP/1.1\r\nHost: x\r\n\r\n"
                     .encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 201") and b"content-length: " in head
        status, _, body = await _read_response(reader)  # the GET's answer comes next, nothing in between
        assert status == 201 and json.loads(body)["method"] == "GET"
        writer.close()


@in_event_loop
async def test_a_refusal_waits_for_the_answers_before_it(model):
    model.hold = asyncio.Event()
    async with serving(model, max_body_bytes=1000) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        writer.write(_post(f"{PREFIX}/infer", b'"first"') + _post(f"{PREFIX}/infer", b"x" * 1001))
        while not model.calls:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        model.hold.set()
        first, second = await _read_response(reader), await _read_response(reader)
        assert first[0] == 200 and json.loads(first[2])["got"] == '"first"'
        assert second[0] == 413 and second[1]["connection"] == "close"
        assert await reader.read() == b""  # then the connection closes
        writer.close()


@in_event_loop
async def test_an_upgrade_request_is_answered_as_plain_http_then_the_connection_closes(model):
    async with serving(model) as server:
        raw = f"GET {PREFIX}/ready HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        writer.write(raw)
        status, _, body = await _read_response(reader)
        assert status == 201 and json.loads(body)["path"] == f"{PREFIX}/ready"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


@in_event_loop
async def test_the_path_is_percent_decoded_as_asgi_asks(model):
    async with serving(model) as server:
        [(status, _, body)] = await _exchange(server.address[1], f"GET {PREFIX}/re%61dy HTTP/1.1\r\nHost: x\r\n\r\n"
                                              .encode())
        assert status == 201 and json.loads(body)["path"] == f"{PREFIX}/ready"


@in_event_loop
async def test_closing_drops_idle_connections_at_once_and_closes_busy_ones_after_their_answer(model):
    model.hold = asyncio.Event()
    async with serving(model) as server:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        idle_writer.write(_post(f"{PREFIX}/versions/1/infer", b"{}"))
        model.hold.set()
        assert (await _read_response(idle_reader))[0] == 200  # kept alive, now idle
        model.hold.clear()
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        busy_writer.write(_post(f"{PREFIX}/infer", b"{}"))
        while len(model.calls) < 2:
            await asyncio.sleep(0.01)
        closing = asyncio.create_task(server.close(timeout_s=5))
        assert await asyncio.wait_for(idle_reader.read(), 2) == b""  # the idle one is closed at once
        model.hold.set()
        status, headers, _ = await _read_response(busy_reader)
        assert status == 200 and headers["connection"] == "close" and await closing == 0
        idle_writer.close()
        busy_writer.close()


@in_event_loop
async def test_a_connection_quiet_past_the_keep_alive_timeout_is_closed(model):
    async with serving(model, keep_alive_timeout_s=0.3) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        writer.write(_post(f"{PREFIX}/infer", b"{}"))
        assert (await _read_response(reader))[0] == 200
        stalled_reader, stalled = await asyncio.open_connection("127.0.0.1", server.address[1])
        stalled.write(b"POST " + PREFIX.encode() + b"/infer HTTP/1.1\r\nHost: x\r\nContent-Le")  # then nothing
        assert await asyncio.wait_for(reader.read(), 3) == b""  # idle after its answer: closed
        assert await asyncio.wait_for(stalled_reader.read(), 3) == b""  # stalled halfway: closed, unanswered
        assert len(model.calls) == 1 and not server.connections
        writer.close()
        stalled.close()


@in_event_loop
async def test_a_request_that_takes_longer_than_the_keep_alive_timeout_still_gets_its_answer(model):
    model.hold = asyncio.Event()
    async with serving(model, keep_alive_timeout_s=1.0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        writer.write(_post(f"{PREFIX}/infer", b'{"slow":1}'))
        await asyncio.sleep(2.5)  # over twice the timeout with nothing sent or answered, but an answer pending
        model.hold.set()
        status, _, body = await _read_response(reader)
        assert status == 200 and json.loads(body)["got"] == '{"slow":1}'
        writer.write(_post(f"{PREFIX}/infer", b"{}"))  # still open right after its answer
        assert (await _read_response(reader))[0] == 200
        writer.close()


@in_event_loop
async def test_a_quiet_client_that_never_reads_its_answers_is_dropped(model):
    async with serving(model, max_body_bytes=1 << 20, keep_alive_timeout_s=0.5) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        big = b'"' + b"x" * 200_000 + b'"'
        for _ in range(20):  # answers echo the body: megabytes the client never reads
            writer.write(_post(f"{PREFIX}/infer", big))
        await writer.drain()
        for _ in range(100):
            await asyncio.sleep(0.1)
            if not server.connections:
                break
        assert not server.connections, "a client that stopped reading must not hold its connection"
        writer.close()


def test_a_keep_alive_timeout_must_be_positive():
    with pytest.raises(ValueError, match="expected seconds > 0"):
        ReplicaHTTPServer(Model().answer, other_routes, PREFIX, 1000, keep_alive_timeout_s=0)
