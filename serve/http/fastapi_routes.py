"""The FastAPI side of the HTTP API: JSON errors, and a model's metadata and readiness routes.

Inference requests skip FastAPI (serve/http/asgi.py, serve/http/replica_server.py); FastAPI serves the rest and the
OpenAPI schema, with every error answered as `{"error": ...}`.
"""

from __future__ import annotations

from importlib import metadata

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from serve.http.asgi import JSON, Reply, error_reply, json_reply
from serve.http.guards import read_body
from serve.http.protocol import InferenceRequest


def fastapi_response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type, headers=reply.headers)


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return fastapi_response(json_reply(body, status, headers))


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return fastapi_response(error_reply(status, message, headers))


def package_version() -> str:
    try:
        return metadata.version("optiserve")
    except metadata.PackageNotFoundError:
        return "unknown"


def with_json_errors(api: FastAPI) -> FastAPI:
    """Answer routing and validation failures with {"error": ...} like every other client error."""

    async def http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 404:
            return error_response(
                404, f"no route for {request.method} {request.url.path}; see /v2 and /v2/models/{{name}}"
            )
        if error.status_code == 405:
            return error_response(405, f"{request.method} is not allowed on {request.url.path}")
        return error_response(error.status_code, str(error.detail))

    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        return error_response(400, f"invalid request: {error.errors()[0].get('msg', 'malformed')}")

    async def bug(request: Request, error: Exception) -> Response:  # still a bug, but answered in JSON
        return error_response(500, f"internal error: {error!r}")

    api.add_exception_handler(HTTPException, http_error)
    api.add_exception_handler(RequestValidationError, validation_error)
    api.add_exception_handler(Exception, bug)
    return api


class _BarePrefixAsRoot:
    """ASGI middleware: `GET /v2/models/{name}` (the bare route prefix) is the app's `/` route."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == scope.get("root_path"):
            scope = dict(scope, path=scope["path"] + "/")
        await self.app(scope, receive, send)


_INFER_BODY = {"requestBody": {"required": True, "content": {JSON: {"schema": InferenceRequest.model_json_schema()}}}}


def model_api(server) -> FastAPI:
    """Metadata and readiness routes of one model (`server`: its serve.pipeline.inference.InferencePipeline); the
    inference routes are here for the OpenAPI schema (and for any caller that bypasses `InferenceRoutes`)."""
    api = with_json_errors(FastAPI(title="optiserve model", docs_url=None, redoc_url=None))
    api.add_middleware(_BarePrefixAsRoot)

    async def answer(request: Request, version: str | None) -> Response:
        async def read(max_bytes: int) -> bytes:
            return await read_body(request.headers.get("content-length"), request.stream(), max_bytes)

        return fastapi_response(await server.answer_inference(dict(request.headers), read, version))

    @api.post("/infer", openapi_extra=_INFER_BODY)
    async def infer(request: Request) -> Response:
        return await answer(request, None)

    @api.post("/versions/{version}/infer", openapi_extra=_INFER_BODY)
    async def infer_version(version: str, request: Request) -> Response:
        return await answer(request, version)

    @api.get("/")
    async def metadata(request: Request) -> Response:
        return fastapi_response(server.metadata(request.headers.get("authorization"), None))

    @api.get("/versions/{version}")
    async def metadata_version(version: str, request: Request) -> Response:
        return fastapi_response(server.metadata(request.headers.get("authorization"), version))

    @api.get("/ready")
    async def ready() -> Response:
        return fastapi_response(server.ready(None))

    @api.get("/versions/{version}/ready")
    async def ready_version(version: str) -> Response:
        return fastapi_response(server.ready(version))

    return api
