"""A replica's own HTTP server facing a client directly (serve/http/replica_connection.py): limits on what one
request or connection may ask, checked before any work, over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from serve.http.http_messages import HTTPLimits
from serve.settings import ServeSettings
from tests.serve.http.test_replica_server import PREFIX, Model, _exchange, _post, _read_response, in_event_loop, serving

SMALL = HTTPLimits(max_request_line_bytes=256, max_header_bytes=1024, max_headers=8, max_pipelined=2,
                   receive_timeout_s=1.0)


@pytest.fixture
def model() -> Model:
    return Model()


@pytest.fixture
def errors_logged():
    """ERROR records of the replica's logger (tracebacks included) while the test runs."""
    records: list[logging.LogRecord] = []
    recorder = logging.Handler(logging.ERROR)
    recorder.emit = records.append
    logger = logging.getLogger("ray.serve.optiserve")
    logger.addHandler(recorder)
    yield records
    logger.removeHandler(recorder)


async def _refusal(port: int, raw: bytes) -> tuple[int, dict[str, str], str]:
    """Send `raw`, read one answer; it must close the connection. Returns (status, headers, error message)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    status, headers, body = await _read_response(reader)
    assert headers["connection"] == "close" and await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    return status, headers, json.loads(body)["error"]


@pytest.mark.parametrize("method, target", [("GET", "http://a:99999/x"), ("GET", "http://x"), ("OPTIONS", "*"),
                                            ("POST", "http://x/v2/models/digits/infer"), ("CONNECT", "a:443")])
@in_event_loop
async def test_a_target_that_is_not_an_origin_form_path_gets_400_without_a_traceback(model, errors_logged, method,
                                                                                     target):
    async with serving(model) as server:
        raw = f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        status, _, error = await _refusal(server.address[1], raw)
    assert status == 400 and "expected an origin-form path" in error and target in error
    assert model.refused == [400] and not model.calls and not errors_logged


# Heads a client may send that must each get a 4xx with a message, never a 500 or a logged traceback.
BAD_HEADS = [
    b"GET http://a:99999/x HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v2/models/digits/infer HTTP/1.1\r\nContent-Length: \xc2\xb2\r\n\r\n",
    b"POST /v2/models/digits/infer HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    b"POST /v2/models/digits/infer HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(9)) + b"\r\n",
    b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n",
]


@pytest.mark.parametrize("head", BAD_HEADS, ids=range(len(BAD_HEADS)))
@in_event_loop
async def test_every_bad_head_gets_a_4xx_with_a_message(model, errors_logged, head):
    async with serving(model, limits=SMALL) as server:
        status, headers, error = await _refusal(server.address[1], head)
    assert 400 <= status < 500 and error and headers["content-type"] == "application/json"
    assert not model.calls and not errors_logged


@in_event_loop
async def test_the_request_line_and_headers_are_held_to_their_limits(model):
    async with serving(model, limits=SMALL) as server:
        port = server.address[1]
        target = PREFIX + "/ready?" + "q" * (256 - len(PREFIX) - len("/ready?"))  # exactly the limit: served
        [(status, _, _)] = await _exchange(port, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 201
        status, _, error = await _refusal(port, f"GET {target}q HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 414 and "request target exceeds the limit of 256 bytes" in error
        eight = "".join(f"X-{i}: {'v' * 100}\r\n" for i in range(8))  # 8 lines, 824 bytes: served
        [(status, _, _)] = await _exchange(port, f"GET {PREFIX}/ready HTTP/1.1\r\n{eight}\r\n".encode())
        assert status == 201
        status, _, error = await _refusal(port, f"GET {PREFIX}/ready HTTP/1.1\r\n{eight}X-9: 1\r\n\r\n".encode())
        assert status == 431 and "more than the limit of 8 header lines" in error
        big = f"X-Big: {'v' * 1020}\r\n"
        status, _, error = await _refusal(port, f"GET {PREFIX}/ready HTTP/1.1\r\n{big}\r\n".encode())
        assert status == 431 and "request headers exceed the limit of 1024 bytes" in error
        assert model.refused == [414, 431, 431]


@in_event_loop
async def test_a_header_that_never_ends_is_refused_once_it_passes_the_limit(model):
    async with serving(model, limits=SMALL) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        writer.write(f"GET {PREFIX}/ready HTTP/1.1\r\nX-Endless: ".encode())
        sent = 0
        answered = asyncio.ensure_future(_read_response(reader))
        while not answered.done() and sent < 100_000:  # the server holds it until it ends: it must not wait
            writer.write(b"v" * 500)
            sent += 500
            await asyncio.sleep(0.01)  # separate reads: the parser sees no end of the header in any of them
        status, headers, body = await answered
        assert status == 431 and "exceed the limit of 1024 bytes" in json.loads(body)["error"]
        assert sent < 100_000 and headers["connection"] == "close"
        writer.close()


@in_event_loop
async def test_a_request_trickling_in_gets_408_at_its_deadline_however_often_bytes_come(model):
    async with serving(model, limits=SMALL) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        raw = _post(f"{PREFIX}/infer", b'{"x": 1}')
        started = time.monotonic()
        answered = asyncio.ensure_future(_read_response(reader))
        for byte in range(len(raw) - 1):  # a byte each 50 ms: never quiet for long, never whole
            if answered.done():
                break
            writer.write(raw[byte:byte + 1])
            await asyncio.sleep(0.05)
        status, headers, body = await answered
        # 1 s deadline; under 4 s holds on a loaded 2-core machine, where timers run late but not seconds late
        assert status == 408 and time.monotonic() - started < 4.0
        assert "not received whole within 1 s of its first byte" in json.loads(body)["error"]
        assert headers["connection"] == "close" and not model.calls and model.refused == [408]
        writer.close()


@in_event_loop
async def test_the_receive_deadline_counts_from_each_requests_first_byte_not_the_connections(model):
    limits = HTTPLimits(receive_timeout_s=1.5)
    async with serving(model, limits=limits) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        raw = _post(f"{PREFIX}/infer", b'{"x": 1}')
        for pause_after_s in (1.7, 0.0):
            writer.write(raw[:20])  # a request that takes a part of its deadline to arrive is answered
            await asyncio.sleep(0.2)  # 1.3 s to spare: a loop stalled that long on a busy machine is not expected
            writer.write(raw[20:])
            assert (await _read_response(reader))[0] == 200
            await asyncio.sleep(pause_after_s)  # idle past the deadline between requests: not a late request
        assert len(model.calls) == 2 and not model.refused
        writer.close()


@in_event_loop
async def test_a_body_trickling_in_gets_408_too(model):
    async with serving(model, limits=SMALL) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        writer.write(f"POST {PREFIX}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n".encode())
        answered = asyncio.ensure_future(_read_response(reader))
        for _ in range(100):
            if answered.done():
                break
            writer.write(b" ")
            await asyncio.sleep(0.05)
        status, _, _ = await answered
        assert status == 408 and not model.calls
        writer.close()


@in_event_loop
async def test_pipelined_requests_past_the_limit_are_left_unread_until_answered(model):
    """With 2 requests unanswered the server stops reading: the client's kernel buffers fill and it must wait;
    memory holds at most what one read brought. Once answered, every request gets its answer, in order."""
    model.hold = asyncio.Event()
    body = b'"' + b"x" * (64 << 10) + b'"'
    count = 200  # 12.5 MiB: more than the kernel buffers both sides would hold for a connection not read
    async with serving(model, max_body_bytes=1 << 20, limits=SMALL) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        for i in range(count):
            writer.write(_post(f"{PREFIX}/infer", body, extra=f"X-N: {i}\r\n"))
        drained = asyncio.ensure_future(writer.drain())
        await asyncio.sleep(1.0)  # a server that reads everything takes far less to take 12.5 MiB on loopback
        (connection,) = server.connections
        assert not drained.done(), "the server read every request while the first was still unanswered"
        assert len(model.calls) == 1 and connection.queued <= 2 + (256 << 10) // len(body) + 1
        model.hold.set()
        answers = [await _read_response(reader) for _ in range(count)]
        await drained
        assert [status for status, _, _ in answers] == [200] * count and len(model.calls) == count
        assert [headers["x-n"] for headers, _, _ in model.calls] == [str(i) for i in range(count)]
        writer.close()


@in_event_loop
async def test_a_client_that_closes_cancels_every_request_it_queued(model):
    model.hold = asyncio.Event()
    async with serving(model) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.address[1])
        writer.write(b"".join(_post(f"{PREFIX}/infer", f'"{i}"'.encode()) for i in range(3)))
        while not model.calls:
            await asyncio.sleep(0.01)
        writer.close()
        for _ in range(100):
            if model.cancelled:
                break
            await asyncio.sleep(0.01)
        model.hold.set()  # were the two behind it still queued, they would reach the model now
        await asyncio.sleep(0.2)
        assert model.cancelled == 1 and len(model.calls) == 1 and server.in_flight == 0
        assert not server.connections


def test_the_limits_come_from_serve_settings():
    assert HTTPLimits() == HTTPLimits.from_settings(ServeSettings())
    limits = HTTPLimits.from_settings(ServeSettings(http_max_headers=20, http_receive_timeout_s=5))
    assert limits.max_headers == 20 and limits.receive_timeout_s == 5
    with pytest.raises(ValueError, match="http_max_pipelined"):
        ServeSettings(http_max_pipelined=0)
    with pytest.raises(ValueError, match="max_headers: expected a number > 0"):
        HTTPLimits(max_headers=0)
