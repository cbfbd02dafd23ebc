"""One client connection to a model replica's own HTTP server (serve/http/replica_server.py): requests read within
limits, answered in order.

Ray binds the server on the configured host (0.0.0.0 in deploy/), so a client may reach it without HAProxy.
Each limit is checked while the bytes arrive, before any work is done for the request:
- request target (the part of the request line a client can grow) over `max_request_line_bytes`: 414 URI Too
  Long, the status clients know for it;
- header names and values over `max_header_bytes` in all, or more than `max_headers` lines: 431. A header still
  arriving is counted by the bytes received so far (the parser holds it whole until its end);
- a target that is not origin-form (`/path?query`): 400. Absolute-form (`http://host/path`), authority-form
  (CONNECT) and asterisk-form (`*`) are for proxies and OPTIONS, not served here;
- body over `max_body_bytes`: 413 as soon as the declared or received size says so;
- a request not received whole within `receive_timeout_s` of its first byte: 408. Bytes that keep trickling in
  do not extend it; only time this server itself spent not reading the connection (below) is not counted;
- pipelining: at `max_pipelined` requests received and not yet answered, the connection is no longer read (the
  kernel's buffers fill, the client waits) until one is answered. The requests already in one read (up to
  asyncio's 256 KiB) are still parsed, and wait unstarted. A request is not started while the client leaves
  earlier answers unread beyond the transport's write buffer limit.
A refusal is answered after the answers before it, with `connection: close`; the bytes after it are read and
dropped meanwhile, so that the client sees it. A client that closes its connection cancels the request being
answered and every request queued behind it (they never start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

import httptools

from serve.http.asgi import ClientGone, error_reply
from serve.http.http_messages import HTTPLimits, Refused, Request, origin_form, reply_headers, response_bytes

if TYPE_CHECKING:
    from serve.http.replica_server import ReplicaHTTPServer

logger = logging.getLogger("ray.serve.optiserve")
# A step of a connection's answers, in order: a request to answer, raw bytes to write, or None: close.
_Step = Request | bytes | None


class Connection(asyncio.Protocol):
    """One client connection (HAProxy's, kept alive): parse requests within the limits, answer them in order.

    Every answer, early refusals and `100 Continue` included, is a step in one queue (`_steps`) that one task
    (`_worker`, while there are steps) works through, so that answers leave in the order their requests came.
    """

    def __init__(self, server: "ReplicaHTTPServer") -> None:
        self._server = server
        self._limits: HTTPLimits = server.limits
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._request = Request()
        self._complete = True  # the last request parsed is complete
        self._in_head = False  # the current request's headers are not all in
        self._begun = 0  # requests begun: whether one began inside a read
        self._head_bytes = 0  # bytes of reads wholly inside the current request's head
        self._header_bytes = self._header_count = self._body_size = 0
        self._receiving_since = 0.0  # its first byte, or when reading last resumed
        self._receive_timer: asyncio.TimerHandle | None = None
        self._ending = False  # a last answer is queued that closes the connection: ignore what follows
        self._steps: deque[_Step] = deque()
        self._unanswered = 0  # requests received and not yet answered
        self._worker: asyncio.Task | None = None
        self._reading = True
        self._writable = asyncio.Event()  # cleared while the client leaves too much of its answers unread
        self._writable.set()
        self._computing = False
        self.last_active = time.monotonic()  # when the client last sent anything, or was last answered

    # --- asyncio.Protocol

    def connection_made(self, transport) -> None:
        self._transport = transport
        self._server.connections.add(self)
        self.last_active = time.monotonic()

    def connection_lost(self, error) -> None:
        self._server.connections.discard(self)
        self._cancel_receive_timer()
        self._steps.clear()  # the requests queued behind the one being answered never start
        if self._worker is not None:
            self._worker.cancel()  # the client is gone: nobody to answer

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self._ending:
            return  # a refused request's body, or bytes after a request that ends the connection: discarded
        in_head, begun = self._in_head, self._begun
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            self._refuse_for(error.__context__)
            return
        except httptools.HttpParserUpgrade:
            if self._complete:  # answer the request as plain HTTP/1.1, then close: the upgrade is not served
                self._end_after_answers()
            else:
                self._refuse(400, "protocol upgrades are not served here")
            return
        except httptools.HttpParserError as error:
            self._refuse(400, f"malformed HTTP/1.1 request: {error}")
            return
        if in_head and self._in_head and self._begun == begun:
            self._count_head_bytes(len(data))
        if not self._complete:
            self._arm_receive_timer()

    def _count_head_bytes(self, received: int) -> None:
        """A read wholly inside a request's head (a header the parser holds until its end): bound what it holds."""
        self._head_bytes += received
        if self._head_bytes > self._limits.max_request_line_bytes + self._limits.max_header_bytes:
            self._refuse(431, f"request headers exceed the limit of {self._limits.max_header_bytes} bytes")

    def _refuse_for(self, error: BaseException | None) -> None:
        if isinstance(error, Refused):
            self._refuse(error.status, error.message)
        else:  # a bug in a callback: still one answer, in JSON
            logger.error("optiserve: the replica's HTTP server failed reading a request: %r", error)
            self._refuse(500, f"internal error reading the request: {error!r}")

    @property
    def answering(self) -> bool:
        """Whether a request of this connection is being computed."""
        return self._computing

    @property
    def queued(self) -> int:
        """Requests received on this connection and not yet answered."""
        return self._unanswered

    @property
    def idle(self) -> bool:
        return self._complete and self._worker is None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def drop(self) -> None:
        """Close now, even with answers the client never read (close() would wait for them to drain)."""
        if self._transport is not None:
            self._transport.abort()

    # --- httptools callbacks (a Refused raised here stops the parser: data_received answers it)

    def on_message_begin(self) -> None:
        self._request = Request()
        self._complete, self._in_head = False, True
        self._begun += 1
        self._head_bytes = self._header_bytes = self._header_count = self._body_size = 0
        self._receiving_since = self.last_active

    def on_url(self, url: bytes) -> None:
        self._request.url += url
        if len(self._request.url) > self._limits.max_request_line_bytes:
            raise Refused(414, f"request target exceeds the limit of {self._limits.max_request_line_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        if self._header_count > self._limits.max_headers:
            raise Refused(431, f"request has more than the limit of {self._limits.max_headers} header lines")
        if self._header_bytes > self._limits.max_header_bytes:
            raise Refused(431, f"request headers exceed the limit of {self._limits.max_header_bytes} bytes")
        self._request.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._ending:
            return
        request = self._request
        request.path, request.query = origin_form(request.url)
        declared, limit = request.headers.get("content-length", ""), self._server.max_body_bytes
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise Refused(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
        if request.headers.get("expect", "").lower() == "100-continue":
            self._enqueue(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._ending:
            return
        self._body_size += len(body)
        if self._body_size > self._server.max_body_bytes:
            raise Refused(413, f"request body exceeds the limit of {self._server.max_body_bytes} bytes")
        self._request.body.append(body)

    def on_message_complete(self) -> None:
        self._complete = True
        self._cancel_receive_timer()
        if self._ending:
            return
        request = self._request
        request.method = self._parser.get_method()
        request.keep_alive = self._parser.should_keep_alive()
        self._enqueue(request)
        if not request.keep_alive:
            self._ending = True  # answered, then closed: what follows is not read

    # --- limits in time and in number

    def _arm_receive_timer(self) -> None:
        if self._receive_timer is None and self._reading and not self._ending:
            delay = self._receiving_since + self._limits.receive_timeout_s - time.monotonic()
            self._receive_timer = asyncio.get_running_loop().call_later(max(delay, 0.0), self._receive_expired)

    def _cancel_receive_timer(self) -> None:
        if self._receive_timer is not None:
            self._receive_timer.cancel()
            self._receive_timer = None

    def _receive_expired(self) -> None:
        self._receive_timer = None
        if not self._complete:
            self._refuse(408, f"request not received whole within {self._limits.receive_timeout_s:g} s of its "
                              "first byte")

    def _request_answered(self) -> None:
        self._unanswered -= 1
        if not self._reading and self._unanswered < self._limits.max_pipelined and not self._transport.is_closing():
            self._transport.resume_reading()
            self._reading = True
            if not self._complete:  # part of a request came before reading stopped: its time starts again
                self._receiving_since = time.monotonic()
                self._arm_receive_timer()

    def _stop_reading(self) -> None:
        if self._reading and not self._transport.is_closing():
            self._transport.pause_reading()
            self._reading = False
            self._cancel_receive_timer()  # not the client's time: it cannot send

    # --- answering, in turn

    def _enqueue(self, step: _Step) -> None:
        self._steps.append(step)
        if isinstance(step, Request):
            self._unanswered += 1
            if self._unanswered >= self._limits.max_pipelined:
                self._stop_reading()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        try:
            while self._steps and not self._transport.is_closing():
                step = self._steps.popleft()
                if isinstance(step, Request):
                    await self._writable.wait()  # the client reads the answers before it first
                    await self._answer(step)
                    self._request_answered()
                elif step is None:
                    self._transport.close()
                else:
                    self._transport.write(step)
        finally:
            self._worker = None

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` after the answers before it, then close: the rest of the bytes are unwanted or
        cannot be trusted (they are read and dropped meanwhile, so that the client sees the answer)."""
        if self._ending:
            return
        self._cancel_receive_timer()
        self._server.on_refused(status)
        reply = error_reply(status, message)
        self._enqueue(response_bytes(status, reply_headers(reply), reply.body, keep_alive=False))
        self._end_after_answers()

    def _end_after_answers(self) -> None:
        self._ending = True
        self._enqueue(None)

    async def _answer(self, request: Request) -> None:
        self._computing = True
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
            self._computing = False
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
