"""The root application at `/`: server health and metadata, and 404 (or 503) for models not served here."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request

from fastapi import FastAPI, Response
from ray import serve

from serve.http import binary
from serve.http.fastapi_routes import error_response, json_response, package_version, with_json_errors
from serve.on_ray.contract import OPTISERVE_LOGGER, ROUTES


root_api = with_json_errors(FastAPI(title="optiserve", docs_url=None, redoc_url=None))
logger = logging.getLogger(OPTISERVE_LOGGER)
_unread_tables: set[str] = set()  # routes URLs whose table had another shape, warned about once each


def routed_apps(routes_url: str) -> set[str]:
    """Applications the HTTP ingress routes to now, from its `/-/routes` table ({prefix: app}).

    A Serve application is RUNNING a moment before the ingress has its route: until then, requests for
    it still reach the root app (503), so readiness waits for the route. Unreachable counts as none; a table
    of another shape too, with a warning (readiness then waits for ever: serve/on_ray/contract.py).
    """
    try:
        with urllib.request.urlopen(routes_url, timeout=2) as response:
            table = json.loads(response.read())
    except (OSError, ValueError):  # refused, timed out, 503 while the ingress has no routes, not JSON
        return set()
    if isinstance(table, dict) and all(isinstance(app, str) for app in table.values()):
        return set(table.values())
    if routes_url not in _unread_tables:
        _unread_tables.add(routes_url)
        logger.warning("optiserve: readiness cannot read Ray's %s table at %s: expected a JSON object "
                       "{route prefix: application}, got %.200s", ROUTES.value, routes_url, json.dumps(table))
    return set()


READY_CACHE_S = 1.0


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress(root_api)
class ServerRoot:
    """Server-wide KServe V2 routes; anything under /v2/models/ that reaches here is an unknown model,
    or a served one whose application is not running yet (503)."""

    def __init__(self, models: list[str], apps: "list[str] | None" = None, routes_url: "str | None" = None) -> None:
        self._models = models
        self._model_apps = apps or models  # one Serve application per model version
        self._routes_url = routes_url
        self._ready = (0.0, False)

    @root_api.get("/v2/health/live")
    async def live(self) -> Response:
        return json_response({"live": True})

    @root_api.get("/v2/health/ready")
    async def ready(self) -> Response:
        ready = await self._all_models_running()
        return json_response({"ready": ready}, 200 if ready else 503)

    @root_api.get("/v2")
    async def server_metadata(self) -> Response:
        return json_response({"name": "optiserve", "version": package_version(), "extensions": [binary.EXTENSION]})

    @root_api.api_route("/v2/models/{name}", methods=["GET", "POST"])
    @root_api.api_route("/v2/models/{name}/{rest:path}", methods=["GET", "POST"])
    async def unknown_model(self, name: str) -> Response:
        if name in self._models:  # served, but its application has no route: it is being redeployed
            return error_response(503, f"model {name!r} is not running yet; retry shortly", {"Retry-After": "1"})
        available = ", ".join(self._models) or "none"
        return error_response(404, f"unknown model {name!r}; available models: {available}")

    async def _all_models_running(self) -> bool:
        checked_at, ready = self._ready
        if time.monotonic() - checked_at > READY_CACHE_S:
            statuses = (await asyncio.to_thread(serve.status)).applications  # a blocking controller call
            ready = all(
                name in statuses and statuses[name].status == "RUNNING" for name in self._model_apps
            )
            if ready and self._routes_url:
                ready = set(self._model_apps) <= await asyncio.to_thread(routed_apps, self._routes_url)
            self._ready = (time.monotonic(), ready)
        return ready
