"""The HTTP/1.1 a replica's own server reads and writes (serve/http/replica_connection.py): a request as read, the
limits it is read within, a whole response."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote

import httptools

from serve.http.asgi import Reply
from serve.settings import ServeSettings

_SHOWN_TARGET_CHARS = 100  # of a refused request target, in its error message


def _setting(name: str):
    return ServeSettings.model_fields[f"http_{name}"].default


@dataclass(frozen=True)
class HTTPLimits:
    """What one request or connection may ask of the server before it is refused (ServeSettings' http_* fields)."""

    max_request_line_bytes: int = _setting("max_request_line_bytes")
    max_header_bytes: int = _setting("max_header_bytes")
    max_headers: int = _setting("max_headers")
    max_pipelined: int = _setting("max_pipelined")
    receive_timeout_s: float = _setting("receive_timeout_s")

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"{name}: expected a number > 0, got {value!r}")

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> "HTTPLimits":
        return cls(**{name: getattr(settings, f"http_{name}") for name in cls.__dataclass_fields__})


class Request:
    __slots__ = ("method", "url", "path", "query", "headers", "body", "keep_alive")

    def __init__(self) -> None:
        self.method = b""
        self.url = b""  # the request target as sent
        self.path = ""  # percent-decoded, as ASGI gives it
        self.query = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.keep_alive = True


class Refused(Exception):
    """Raised in a parser callback: stop parsing, answer `status` with `message`, close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def origin_form(target: bytes) -> tuple[str, bytes]:
    """The percent-decoded path and the query of an origin-form request target (`/path?query`)."""
    shown = target[:_SHOWN_TARGET_CHARS].decode("latin-1") + ("..." if len(target) > _SHOWN_TARGET_CHARS else "")
    if not target.startswith(b"/"):
        raise Refused(400, f"request target: expected an origin-form path such as /v2/health/live, got {shown!r}")
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        raise Refused(400, f"request target: expected a valid origin-form path, got {shown!r}") from None
    return unquote((url.path or b"/").decode("latin-1")), url.query or b""


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
