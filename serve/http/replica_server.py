"""Each model replica's own HTTP/1.1 server, where the ingress sends the model's requests.

Ray Serve answers a replica's HTTP through uvicorn and its own ASGI wrapper: request-id middleware, a
disconnect watcher (two tasks and an `asyncio.wait` per request), ongoing-request accounting and request
metrics. On 2 cores that path cost more than the digits model itself: measured through the same HAProxy,
this server answered 2x the requests per second at 8 clients and 2.5x at 32 (docs/BENCHMARKS.md,
"Why each replica answers HTTP itself"). Where it listens (beside Ray's own server for the replica) is decided in
serve/on_ray/replica_http.py; this module knows nothing of Ray.

Inference POSTs go straight to the pipeline's `answer`; any other request (metadata, readiness, 404s) goes to
the same ASGI app Ray would have called, with the scope Ray would give it.

What Ray's path did and this one does instead:
- in-flight requests are counted here: a replica reports them for autoscaling (`load_since_last_report`,
  read by serve/on_ray/autoscaling.py), and its stop waits for them (`close`);
- a client that disconnects cancels its request, and drops those it queued behind it;
- per-request metrics are optiserve's own (serve/observability/metrics.py); Ray's HTTP request metrics do not
  count these.

Each connection answers its requests in order, one at a time (HTTP/1.1 pipelining is answered in order),
within the limits serve/http/replica_connection.py lists (request line, headers, body, time to receive a
request, requests pipelined). A connection with no request being computed that has sent nothing and been
answered nothing for `keep_alive_timeout_s` (idle between requests, stalled inside one, or not reading its
answers) is closed.

The ingress stamp (serve/http/ingress_stamp.py) is passed on only where it comes with the ingress's token,
where there is one (`listen`'s `ingress_token`): a client that reaches this server directly cannot set its own
request's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Callable

from serve.http.asgi import Answer, error_reply, inference_version
from serve.http.ingress_stamp import IngressProof
from serve.http.replica_connection import Connection, HTTPLimits, Request, reply_headers

logger = logging.getLogger("ray.serve.optiserve")

KEEP_ALIVE_S = 90.0  # how long a quiet connection stays open, unless the caller says otherwise


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound on `host:port`; on an IPv6 wildcard, IPv4 too (asyncio's own is IPv6 only)."""
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


class ReplicaHTTPServer:
    """The server for one model replica: `answer` for inference POSTs under `prefix`, `app` (ASGI) otherwise.

    Requests refused before they are read (400 malformed, 408 too slow, 413/414/431 too large) are reported
    to `on_refused`.
    """

    def __init__(self, answer: Answer, app, prefix: str, max_body_bytes: int,
                 on_refused: Callable[[int], None] = lambda status: None,
                 keep_alive_timeout_s: float = KEEP_ALIVE_S, limits: HTTPLimits = HTTPLimits()) -> None:
        if keep_alive_timeout_s <= 0:
            raise ValueError(f"keep_alive_timeout_s: expected seconds > 0, got {keep_alive_timeout_s}")
        self._answer = answer
        self.keep_alive_timeout_s = keep_alive_timeout_s
        self._sweeper: asyncio.Task | None = None
        self.on_refused = on_refused  # called with the status of each request refused before it was read
        self._app = app
        self._prefix = prefix
        self.max_body_bytes = max_body_bytes
        self.limits = limits
        self._proof = IngressProof("")  # until `listen` is given the ingress's token
        self.connections: set[Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._load_area = 0.0  # in-flight requests x seconds since the last report
        self._load_since = self._load_changed = time.monotonic()
        self.address: tuple[str, int] | None = None
        self.draining = False  # stopping: answers close their connections

    # --- lifecycle

    async def listen(self, host: str, port: int, ingress_token: str = "") -> tuple[str, int]:
        """Listen on `host:port` (port 0: any free one); returns the address. `ingress_token`: the token the
        ingress adds to each request it stamps ("" where it adds none)."""
        self._proof = IngressProof(ingress_token)
        loop = asyncio.get_running_loop()
        sock = _listening_socket(host, port)
        self._server = await loop.create_server(lambda: Connection(self), sock=sock, backlog=2048)
        self._sweeper = loop.create_task(self._close_quiet_connections())
        self._sweeper.add_done_callback(failure_logger("this replica stopped closing quiet connections"))
        self.address = (host, sock.getsockname()[1])
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

    async def respond(self, request: Request) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        body = b"".join(request.body)
        self._proof.keep_proven_stamp(request.headers)
        if request.method == b"POST":
            matched, version = inference_version(request.path, self._prefix)
            if matched:
                async def read(max_bytes: int) -> bytes:
                    return body  # already held to max_body_bytes while it arrived

                reply = await self._answer(request.headers, read, version)
                return reply.status, reply_headers(reply), reply.body
        return await self._call_app(request, request.path, request.query, body)

    async def _call_app(self, request: Request, path: str, query: bytes, body: bytes):
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
