"""The inference routes as bare ASGI, in front of the FastAPI app that serves everything else.

Every inference request used to cross FastAPI's middleware stack, router and
dependency solver and build a Starlette Request and Response: about a tenth of
a replica's CPU per request (py-spy, docs/BENCHMARKS.md). `InferenceRoutes`
answers `POST {prefix}/infer` and `POST {prefix}/versions/{v}/infer` itself
and hands every other request, and the lifespan, to the FastAPI app, which
still declares the inference routes for the OpenAPI schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

import orjson

from serve.http.guards import read_body

JSON = "application/json"


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, body, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, orjson.dumps(body), JSON, headers or {})


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return json_reply({"error": message}, status, headers)


class ClientGone(Exception):
    """The client disconnected before its body was read: there is no one to answer."""


async def _body_chunks(receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def inference_version(path: str, prefix: str) -> tuple[bool, str | None]:
    """Whether `path` is an inference route under `prefix`, and the version it names (None: the default)."""
    if not path.startswith(prefix):
        return False, None
    route = path[len(prefix):]
    if route == "/infer":
        return True, None
    parts = route.split("/")
    if len(parts) == 4 and parts[1] == "versions" and parts[2] and parts[3] == "infer":
        return True, parts[2]
    return False, None


# (request headers, read_body(max_bytes), version) -> Reply
Answer = Callable[[dict[str, str], Callable[[int], Awaitable[bytes]], "str | None"], Awaitable[Reply]]


class InferenceRoutes:
    """ASGI app: inference POSTs go straight to `answer`; the rest goes to `fallback`."""

    def __init__(self, answer: Answer, fallback) -> None:
        self._answer = answer
        self._fallback = fallback

    def add_exception_handler(self, *args, **kwargs) -> None:
        """Ray Serve registers its back-pressure handlers here; they belong to the FastAPI app."""
        self._fallback.add_exception_handler(*args, **kwargs)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            matched, version = inference_version(scope["path"], scope.get("root_path", ""))
            if matched:
                await self._infer(scope, receive, send, version)
                return
        await self._fallback(scope, receive, send)

    async def _infer(self, scope, receive, send, version: str | None) -> None:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}

        async def read_request_body(max_bytes: int) -> bytes:
            return await read_body(headers.get("content-length"), _body_chunks(receive), max_bytes)

        try:
            reply = await self._answer(headers, read_request_body, version)
        except ClientGone:
            return
        await send_reply(send, reply)


async def send_reply(send, reply: Reply) -> None:
    headers = [(b"content-type", reply.content_type.encode()), (b"content-length", str(len(reply.body)).encode())]
    headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})
