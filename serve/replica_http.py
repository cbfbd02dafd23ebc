"""Each model replica's own HTTP/1.1 server, where HAProxy sends the model's requests.

Ray Serve answers a replica's HTTP through uvicorn and its own ASGI wrapper: request-id middleware, a
disconnect watcher (two tasks and an `asyncio.wait` per request), ongoing-request accounting and request
metrics. On 2 cores that path cost more than the digits model itself: measured through the same HAProxy,
this server answered 2x the requests per second at 8 clients and 2.5x at 32 (docs/BENCHMARKS.md,
"Each replica's own HTTP server").

The server listens beside Ray's: on Ray's port for the replica plus a fixed offset, on the same address, so
that the HAProxy rewrite (serve/ingress.py) can point each replica's server line at it from Ray's generated
configuration alone, while HAProxy's health checks still go to Ray's port and so still follow Ray's view of
the replica (its drain closes that port). Inference POSTs go straight to the model server's `answer`; any
other request (metadata, readiness, 404s) goes to the same ASGI app Ray would have called.

What Ray's path did and this one does instead:
- in-flight requests are counted here: a replica reports them for autoscaling (`load_since_last_report`,
  read by serve/autoscaling.py), and its stop waits for them (`close`);
- a client that disconnects cancels its request (its connection's task is cancelled);
- per-request metrics are optiserve's own (serve/metrics.py); Ray's HTTP request metrics do not count these.

Each connection answers its requests in order, one at a time (HTTP/1.1 pipelining is answered in order).
Bodies over `max_body_bytes` get 413 as soon as the size is known, then the connection closes. A connection
with no answer pending that has sent nothing and been answered nothing for `keep_alive_timeout_s` (idle
between requests, or stalled inside one) is closed, after Ray's HTTP keep-alive timeout as Ray's uvicorn
closes its idle ones.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Callable
from urllib.parse import unquote

import httptools

from serve.asgi import Answer, ClientGone, Reply, error_reply, inference_version
from serve.ingress import POLICY_VARIABLE, AdmissionPolicy, port_offset, ray_port_range

logger = logging.getLogger("ray.serve.optiserve")

FIND_RAY_PORT_EVERY_S = 0.05  # while the replica starts; psutil reads the node's TCP table each time
# Ray's uvicorn keep-alive, where set (not 0). A Serve config's http_options.keep_alive_timeout_s does not reach
# the replica: set this variable on the nodes to change both.
RAY_KEEP_ALIVE_VARIABLE = "RAY_SERVE_HTTP_KEEP_ALIVE_TIMEOUT_S"
RAY_KEEP_ALIVE_DEFAULT_S = 90.0  # Ray Serve's http_options.keep_alive_timeout_s default


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


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound like Ray's for the replica: on an IPv6 wildcard, IPv4 too (asyncio's own is IPv6 only)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


_date_cache: list = [0, b""]


def _date_header() -> bytes:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"]
    return _date_cache[1]


def response_bytes(status: int, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool,
                   content_length: int | None = None) -> bytes:
    """One whole HTTP/1.1 response: status line, headers (content-length added: the body's, unless given, as
    for HEAD), body; written in one send."""
    try:
        reason = HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b""
    head = [b"HTTP/1.1 %d %s\r\n" % (status, reason), _date_header()]
    head += [name + b": " + value + b"\r\n" for name, value in headers if name != b"content-length"]
    head.append(b"content-length: %d\r\n" % (len(body) if content_length is None else content_length))
    if not keep_alive:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head) + body


def reply_headers(reply: Reply) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", reply.content_type.encode())] + [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers.items()]


class _Request:
    __slots__ = ("method", "url", "headers", "body", "keep_alive")

    def __init__(self) -> None:
        self.method = b""
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.keep_alive = True


class _Connection(asyncio.Protocol):
    """One client connection (HAProxy's, kept alive): parse requests, answer them in order.

    Every answer, early refusals and `100 Continue` included, goes through one chain of tasks (`_tail`),
    each waiting for the one before, so that answers leave in the order their requests came.
    """

    def __init__(self, server: "ReplicaHTTPServer") -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._request = _Request()
        self._body_size = 0
        self._complete = True  # the last request parsed is complete
        self._ending = False  # a last answer is queued that closes the connection: ignore what follows
        self._tail: asyncio.Task | None = None  # the last queued answer; each waits for the one before
        self.last_active = time.monotonic()  # when the client last sent anything, or was last answered

    # --- asyncio.Protocol

    def connection_made(self, transport) -> None:
        self._transport = transport
        self._server.connections.add(self)
        self.last_active = time.monotonic()

    def connection_lost(self, error) -> None:
        self._server.connections.discard(self)
        if self._tail is not None and not self._tail.done():
            self._tail.cancel()  # the client is gone: nobody to answer

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self._ending:
            return  # a refused request's body, or bytes after a request that ends the connection: discarded
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._complete:  # answer the request as plain HTTP/1.1, then close: the upgrade is not served
                self._end_after_answers()
            else:
                self._refuse(400, "protocol upgrades are not served here")
        except httptools.HttpParserError as error:
            self._refuse(400, f"malformed HTTP/1.1 request: {error}")

    @property
    def answering(self) -> bool:
        return self._tail is not None and not self._tail.done()

    @property
    def idle(self) -> bool:
        return self._complete and not self.answering

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def drop(self) -> None:
        """Close now, even with answers the client never read (close() would wait for them to drain)."""
        if self._transport is not None:
            self._transport.abort()

    # --- httptools callbacks

    def on_message_begin(self) -> None:
        self._request = _Request()
        self._body_size = 0
        self._complete = False

    def on_url(self, url: bytes) -> None:
        self._request.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._request.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        declared = self._request.headers.get("content-length", "")
        limit = self._server.max_body_bytes
        if declared.isdigit() and int(declared) > limit:
            self._refuse(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
        elif self._request.headers.get("expect", "").lower() == "100-continue":
            self._queue(self._write_raw(b"HTTP/1.1 100 Continue\r\n\r\n"))

    def on_body(self, body: bytes) -> None:
        if self._ending:
            return
        self._body_size += len(body)
        if self._body_size > self._server.max_body_bytes:
            self._refuse(413, f"request body exceeds the limit of {self._server.max_body_bytes} bytes")
            return
        self._request.body.append(body)

    def on_message_complete(self) -> None:
        self._complete = True
        if self._ending:
            return
        request = self._request
        request.method = self._parser.get_method()
        request.keep_alive = self._parser.should_keep_alive()
        self._queue(self._answer(request))

    # --- answering, in turn

    def _queue(self, step) -> None:
        self._tail = asyncio.get_running_loop().create_task(self._in_turn(self._tail, step))

    async def _in_turn(self, previous: asyncio.Task | None, step) -> None:
        try:
            if previous is not None and not previous.done():
                await asyncio.shield(previous)  # cancelling this one must not cancel the one before
        except BaseException:
            step.close()  # never started: nothing to answer on a connection that is going away
            raise
        await step

    async def _write_raw(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` after the answers before it, then close: the rest of the bytes are unwanted or
        cannot be trusted (they are read and dropped meanwhile, so that the client sees the answer)."""
        if self._ending:
            return
        self._ending = True
        self._server.on_refused(status)
        reply = error_reply(status, message)
        self._queue(self._write_raw(response_bytes(status, reply_headers(reply), reply.body, keep_alive=False)))
        self._end_after_answers()

    def _end_after_answers(self) -> None:
        self._ending = True

        async def close() -> None:
            self._transport.close()

        self._queue(close())

    async def _answer(self, request: _Request) -> None:
        self._server.request_started()
        try:
            status, headers, body = await self._server.respond(request)
        except ClientGone:
            self._transport.close()
            return
        except Exception as error:  # a bug, but still answered, in JSON
            logger.exception("optiserve: request failed in the replica's HTTP server")
            reply = error_reply(500, f"internal error: {error!r}")
            status, headers, body = reply.status, reply_headers(reply), reply.body
        finally:
            self._server.request_finished()
        keep_alive = request.keep_alive and not self._server.draining
        body_length = len(body)
        if request.method == b"HEAD":
            body = b""  # the headers a GET would get, no body
        if self._transport.is_closing():
            return
        try:
            self._transport.write(response_bytes(status, headers, body, keep_alive, body_length))
        except Exception:  # an answer that cannot be written (a bug): the connection cannot go on in step
            logger.exception("optiserve: an answer could not be written; closing the connection")
            keep_alive = False
        self.last_active = time.monotonic()
        if not keep_alive:
            self._transport.close()


class ReplicaHTTPServer:
    """The server for one model replica: `answer` for inference POSTs under `prefix`, `app` (ASGI) otherwise.

    Requests refused before they are read (400 malformed, 413 too large) are reported to `on_refused`.
    """

    def __init__(self, answer: Answer, app, prefix: str, max_body_bytes: int,
                 on_refused: Callable[[int], None] = lambda status: None,
                 keep_alive_timeout_s: float = RAY_KEEP_ALIVE_DEFAULT_S) -> None:
        if keep_alive_timeout_s <= 0:
            raise ValueError(f"keep_alive_timeout_s: expected seconds > 0, got {keep_alive_timeout_s}")
        self._answer = answer
        self.keep_alive_timeout_s = keep_alive_timeout_s
        self._sweeper: asyncio.Task | None = None
        self.on_refused = on_refused  # called with the status of each request refused before it was read
        self._app = app
        self._prefix = prefix
        self.max_body_bytes = max_body_bytes
        self.connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._load_area = 0.0  # in-flight requests x seconds since the last report
        self._load_since = self._load_changed = time.monotonic()
        self.address: tuple[str, int] | None = None
        self.draining = False  # stopping: answers close their connections

    # --- lifecycle

    async def listen_beside_ray(self, environ: dict[str, str], timeout_s: float = 120.0) -> tuple[str, int]:
        """Wait for Ray's HTTP server in this replica, then listen on its port + the offset, same address."""
        port_range = ray_port_range(environ)
        deadline = time.monotonic() + timeout_s
        while (ray := ray_listening_port(port_range)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Ray's HTTP server for this replica never listened in {port_range} "
                                   f"within {timeout_s:g} s")
            await asyncio.sleep(FIND_RAY_PORT_EVERY_S)
        host, port = ray[0], ray[1] + port_offset(environ)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), sock=_listening_socket(host, port),
                                                backlog=2048)
        self._sweeper = loop.create_task(self._close_quiet_connections())
        self._sweeper.add_done_callback(failure_logger("this replica stopped closing quiet connections"))
        self.address = (host, port)
        return self.address

    async def _close_quiet_connections(self) -> None:
        """Every quarter of the timeout (at most 10 s): close connections quiet for longer, with nothing to
        answer (idle keep-alive connections, and clients stalled halfway through a request)."""
        every_s = min(self.keep_alive_timeout_s / 4, 10.0)
        while True:
            await asyncio.sleep(every_s)
            quiet_since = time.monotonic() - self.keep_alive_timeout_s
            for connection in list(self.connections):
                if not connection.answering and connection.last_active < quiet_since:
                    connection.drop()

    async def close(self, timeout_s: float) -> int:
        """Stop listening and close idle connections; requests in flight get up to `timeout_s` to be answered,
        each closing its connection. Returns how many were still unanswered."""
        self.draining = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection.idle:
                connection.close()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass
        for connection in list(self.connections):
            connection.close()
        return self._in_flight

    # --- load, for autoscaling

    def request_started(self) -> None:
        self._account()
        self._in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self._account()
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    def _account(self) -> None:
        now = time.monotonic()
        self._load_area += self._in_flight * (now - self._load_changed)
        self._load_changed = now

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def load_since_last_report(self) -> float:
        """Mean requests in flight since the last call (time-weighted), then start a new period."""
        self._account()
        now = time.monotonic()
        mean = self._load_area / (now - self._load_since) if now > self._load_since else float(self._in_flight)
        self._load_area, self._load_since = 0.0, now
        return mean

    # --- requests

    async def respond(self, request: _Request) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        body = b"".join(request.body)
        url = httptools.parse_url(request.url)
        path = unquote(url.path.decode("latin-1"))
        if request.method == b"POST":
            matched, version = inference_version(path, self._prefix)
            if matched:
                async def read(max_bytes: int) -> bytes:
                    return body  # already held to max_body_bytes while it arrived

                reply = await self._answer(request.headers, read, version)
                return reply.status, reply_headers(reply), reply.body
        return await self._call_app(request, path, url.query or b"", body)

    async def _call_app(self, request: _Request, path: str, query: bytes, body: bytes):
        """Any other request, through the ASGI app Ray would have called, with the scope Ray would give it."""
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": request.method.decode("latin-1"), "scheme": "http", "path": path,
            "raw_path": request.url.split(b"?", 1)[0], "query_string": query, "root_path": self._prefix,
            "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in request.headers.items()],
            "server": self.address, "client": None,
        }
        delivered = False
        gone = asyncio.Event()

        async def receive() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()  # the ASGI app waits for a disconnect only once it has its answer; never here
            return {"type": "http.disconnect"}

        started: dict = {}
        chunks: list[bytes] = []

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self._app(scope, receive, send)
        if not started:
            reply = error_reply(500, f"internal error: no answer for {request.method.decode()} {path}")
            return reply.status, reply_headers(reply), reply.body
        headers = [(bytes(name).lower(), bytes(value)) for name, value in started.get("headers", [])]
        return started["status"], headers, b"".join(chunks)


def failure_logger(what: str) -> Callable[[asyncio.Task], None]:
    """A task done-callback that logs `what` with the task's exception, if it failed."""
    def log(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("optiserve: %s: %s", what, task.exception())
    return log


log_failure = failure_logger("this replica's HTTP server did not start")


def replica_http_enabled(environ: dict[str, str]) -> bool:
    """Whether this node's HAProxy sends model traffic to the replicas' own servers (serve/ingress.py's policy)."""
    return bool(environ.get(POLICY_VARIABLE)) and AdmissionPolicy.from_environment(environ).replica_http

