"""Each model replica's own HTTP/1.1 server, where HAProxy sends the model's requests.

Ray Serve answers a replica's HTTP through uvicorn and its own ASGI wrapper: request-id middleware, a
disconnect watcher (two tasks and an `asyncio.wait` per request), ongoing-request accounting and request
metrics. On 2 cores that path cost more than the digits model itself: measured through the same HAProxy,
this server answered 2x the requests per second at 8 clients and 2.5x at 32 (docs/BENCHMARKS.md,
"Each replica's own HTTP server").

The server listens beside Ray's: on Ray's port for the replica plus a fixed offset, on the same address, so
that the HAProxy rewrite (serve/on_ray/ingress.py) can point each replica's server line at it from Ray's generated
configuration alone, while HAProxy's health checks still go to Ray's port and so still follow Ray's view of
the replica (its drain closes that port). Inference POSTs go straight to the model server's `answer`; any
other request (metadata, readiness, 404s) goes to the same ASGI app Ray would have called.

What Ray's path did and this one does instead:
- in-flight requests are counted here: a replica reports them for autoscaling (`load_since_last_report`,
  read by serve/on_ray/autoscaling.py), and its stop waits for them (`close`);
- a client that disconnects cancels its request, and drops those it queued behind it;
- per-request metrics are optiserve's own (serve/observability/metrics.py); Ray's HTTP request metrics do not count these.

Each connection answers its requests in order, one at a time (HTTP/1.1 pipelining is answered in order),
within the limits serve/http/replica_connection.py lists (request line, headers, body, time to receive a request,
requests pipelined). A connection with no request being computed that has sent nothing and been answered
nothing for `keep_alive_timeout_s` (idle between requests, stalled inside one, or not reading its answers) is
closed, after Ray's HTTP keep-alive timeout as Ray's uvicorn closes its idle ones.

The ingress stamp (serve/http/ingress_stamp.py) is passed on only where it comes with the ingress's token, where the
admission policy has one: a client that reaches this server directly cannot set its own request's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Callable

from serve.http.asgi import Answer, error_reply, inference_version
from serve.on_ray.ingress import POLICY_VARIABLE, AdmissionPolicy, port_offset, ray_port_range
from serve.http.ingress_stamp import IngressProof
from serve.http.replica_connection import Connection, HTTPLimits, Request, reply_headers

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


class ReplicaHTTPServer:
    """The server for one model replica: `answer` for inference POSTs under `prefix`, `app` (ASGI) otherwise.

    Requests refused before they are read (400 malformed, 408 too slow, 413/414/431 too large) are reported
    to `on_refused`.
    """

    def __init__(self, answer: Answer, app, prefix: str, max_body_bytes: int,
                 on_refused: Callable[[int], None] = lambda status: None,
                 keep_alive_timeout_s: float = RAY_KEEP_ALIVE_DEFAULT_S, limits: HTTPLimits = HTTPLimits()) -> None:
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
        self._proof = IngressProof("")  # until listen_beside_ray reads the admission policy
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
        self._proof = IngressProof(ingress_token(environ))
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), sock=_listening_socket(host, port),
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


log_failure = failure_logger("this replica's HTTP server did not start")


def ingress_token(environ: dict[str, str]) -> str:
    """The token HAProxy adds to each request where the admission policy has one, else ""."""
    return AdmissionPolicy.from_environment(environ).ingress_token if environ.get(POLICY_VARIABLE) else ""


def replica_http_enabled(environ: dict[str, str]) -> bool:
    """Whether this node's HAProxy sends model traffic to the replicas' own servers (serve/on_ray/ingress.py's policy)."""
    return bool(environ.get(POLICY_VARIABLE)) and AdmissionPolicy.from_environment(environ).replica_http

