"""Whether a server serves a user class's model, asked once before that class sends anything.

`locust -f loadtests/locustfile.py` with no class names runs every user class, so a server without
MiniLM would otherwise answer every MiniLMUser request with a 404 and the run would report them as
failures. Only a 404 for `GET /v2/models/{name}` counts as "not served": a server that cannot be reached,
or answers anything else, is left to the load test, whose failures are then real ones.
No locust import here: the load generator and the tests share this module.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Callable

import orjson

Fetch = Callable[[str, float], tuple[int, bytes]]


def http_get(url: str, timeout_s: float) -> tuple[int, bytes]:
    """(status, body) of `GET url`; an HTTP error status is an answer too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def why_not_served(host: str, model: str, timeout_s: float = 10.0, fetch: Fetch = http_get) -> str | None:
    """None when `host` serves `model` (or cannot say); else the server's own 404 message."""
    try:
        status, body = fetch(f"{host.rstrip('/')}/v2/models/{model}", timeout_s)
    except OSError:
        return None  # unreachable: the load test's own requests will show it
    if status != 404:
        return None
    try:
        message = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        message = None
    return message if isinstance(message, str) else f"GET /v2/models/{model} answered 404"


class ServedModels:
    """Remembers each model's answer, so a server is asked once per model, not once per user."""

    def __init__(self, fetch: Fetch = http_get) -> None:
        self._fetch = fetch
        self._answers: dict[tuple[str, str], str | None] = {}

    def why_not_served(self, host: str, model: str) -> str | None:
        """The reason `model` is not served at `host`, or None; the server is asked the first time only."""
        if (host, model) not in self._answers:
            self._answers[(host, model)] = why_not_served(host, model, fetch=self._fetch)
        return self._answers[(host, model)]
