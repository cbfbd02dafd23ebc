"""The benchmarks' load client against a real HTTP/1.1 server on loopback: every request answered once, counted."""

from __future__ import annotations

import itertools
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks.load_client import closed_loop


class CountingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, body))
        if self.path == "/slow":
            time.sleep(0.5)
        status, reply = (503, b'{"error":"busy"}') if self.path == "/busy" else (200, b'{"ok":true}')
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        if self.path == "/close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


class NumberedBodies:
    def __init__(self) -> None:
        self._counter = itertools.count()

    def next(self) -> bytes:
        return b'{"n":%d}' % next(self._counter)


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # the timeout test's client hangs up before the late answer: a broken pipe here is expected


@pytest.fixture
def http_server():
    server = QuietServer(("127.0.0.1", 0), CountingHandler)
    server.daemon_threads = True
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_every_request_is_answered_once_and_bodies_arrive_whole(http_server):
    cell = closed_loop(_url(http_server, "/ok"), NumberedBodies(), concurrency=4, seconds=0.5)
    assert cell["errors"] == 0, cell["error_kinds"]
    assert cell["answered"] == len(http_server.received) > 0
    sent = sorted(int(body[5:-1]) for _, body in http_server.received)
    assert sent == list(range(len(sent)))  # each body once, whole, none skipped
    assert cell["p50_ms"] <= cell["p99_ms"]


def test_a_server_that_closes_after_each_answer_costs_nothing(http_server):
    cell = closed_loop(_url(http_server, "/close"), NumberedBodies(), concurrency=2, seconds=0.3)
    assert cell["errors"] == 0, cell["error_kinds"]
    assert cell["answered"] == len(http_server.received) > 1


def test_non_200_answers_are_errors_by_status(http_server):
    cell = closed_loop(_url(http_server, "/busy"), NumberedBodies(), concurrency=2, seconds=0.3)
    assert cell["answered"] == 0
    assert cell["error_kinds"] == {"503": len(http_server.received)}


def test_a_late_answer_is_a_timeout_not_a_hang(http_server):
    began = time.monotonic()
    cell = closed_loop(_url(http_server, "/slow"), NumberedBodies(), concurrency=2, seconds=0.1, timeout_s=0.2)
    assert set(cell["error_kinds"]) == {"TimeoutError"}
    assert time.monotonic() - began < 2


def test_a_closed_port_is_counted_as_connection_errors():
    with ThreadingHTTPServer(("127.0.0.1", 0), CountingHandler) as probe:
        port = probe.server_address[1]  # free once closed
    cell = closed_loop(f"http://127.0.0.1:{port}/ok", NumberedBodies(), concurrency=2, seconds=0.2)
    assert cell["answered"] == 0
    assert set(cell["error_kinds"]) == {"ConnectionRefusedError"}


def test_only_plain_http_urls_are_taken():
    with pytest.raises(ValueError, match="expected an http://host:port/path URL"):
        closed_loop("https://127.0.0.1:1/x", NumberedBodies(), concurrency=1, seconds=0.1)
