import asyncio

import pytest

from serve.http.asgi import InferenceRoutes, Reply, inference_version
from serve.http.protocol import ProtocolError

PREFIX = "/v2/models/digits"


@pytest.mark.parametrize("path, expected", [
    (f"{PREFIX}/infer", (True, None)),
    (f"{PREFIX}/versions/3/infer", (True, "3")),
    (f"{PREFIX}/versions//infer", (False, None)),
    (f"{PREFIX}/versions/3/4/infer", (False, None)),
    (f"{PREFIX}/infer/", (False, None)),
    (f"{PREFIX}", (False, None)),
    (f"{PREFIX}/ready", (False, None)),
    ("/v2/models/other/infer", (False, None)),
])
def test_only_the_two_inference_routes_under_the_prefix_match(path, expected):
    assert inference_version(path, PREFIX) == expected


class Recorder:
    """An ASGI fallback and `send` that remember what reached them."""

    def __init__(self) -> None:
        self.fallback_paths: list[str] = []
        self.sent: list[dict] = []

    async def fallback(self, scope, receive, send) -> None:
        self.fallback_paths.append(scope.get("path", scope["type"]))

    async def send(self, message) -> None:
        self.sent.append(message)


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": PREFIX, "headers": headers}


def receiver(chunks: list[bytes], disconnect: bool = False):
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if disconnect:
        messages = [*messages[:1], {"type": "http.disconnect"}]
        messages[0]["more_body"] = True

    async def receive():
        return messages.pop(0)

    return receive


def run(routes, scope, receive, recorder) -> None:
    asyncio.run(routes(scope, receive, recorder.send))


def test_an_inference_post_reaches_the_answer_with_its_headers_body_and_version():
    recorder, seen = Recorder(), {}

    async def answer(headers, read_body, version):
        seen.update(headers=headers, body=await read_body(100), version=version)
        return Reply(201, b'{"ok":1}', headers={"X-Optiserve-Cache": "miss"})

    scope = http_scope("POST", f"{PREFIX}/versions/2/infer", [(b"Authorization", b"Bearer t")])
    run(InferenceRoutes(answer, recorder.fallback), scope, receiver([b'{"in', b'puts":[]}']), recorder)
    assert seen == {"headers": {"authorization": "Bearer t"}, "body": b'{"inputs":[]}', "version": "2"}
    start, body = recorder.sent
    assert start["status"] == 201
    assert dict(start["headers"]) == {b"content-type": b"application/json", b"content-length": b"8",
                                      b"x-optiserve-cache": b"miss"}
    assert body == {"type": "http.response.body", "body": b'{"ok":1}'}
    assert recorder.fallback_paths == []


@pytest.mark.parametrize("scope", [
    http_scope("GET", f"{PREFIX}/infer", []),
    http_scope("POST", f"{PREFIX}/ready", []),
    {"type": "lifespan"},
])
def test_everything_else_goes_to_the_fallback_app(scope):
    recorder = Recorder()

    async def answer(headers, read_body, version):
        raise AssertionError("the inference answer must not be called")

    run(InferenceRoutes(answer, recorder.fallback), scope, receiver([b""]), recorder)
    assert recorder.fallback_paths == [scope.get("path", "lifespan")] and recorder.sent == []


def test_a_client_that_disconnects_mid_body_gets_nothing_sent():
    recorder = Recorder()

    async def answer(headers, read_body, version):
        await read_body(100)
        raise AssertionError("reading a disconnected body must raise ClientGone")

    scope = http_scope("POST", f"{PREFIX}/infer", [])
    run(InferenceRoutes(answer, recorder.fallback), scope, receiver([b"{", b"}"], disconnect=True), recorder)
    assert recorder.sent == []  # ClientGone ended the request quietly: no one is left to answer


def test_the_body_limit_applies_to_what_arrives_not_what_is_declared():
    recorder, errors = Recorder(), []

    async def answer(headers, read_body, version):
        try:
            await read_body(10)
        except ProtocolError as error:
            errors.append(error.status)
        return Reply(413, b"{}")

    scope = http_scope("POST", f"{PREFIX}/infer", [(b"content-length", b"5")])
    run(InferenceRoutes(answer, recorder.fallback), scope, receiver([b"x" * 8, b"x" * 8]), recorder)
    assert errors == [413] and recorder.sent[0]["status"] == 413
