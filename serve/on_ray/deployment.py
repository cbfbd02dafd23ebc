"""A model's Ray Serve deployment: a thin adapter around one InferencePipeline (serve/pipeline/inference.py).

Each model version is its own Serve application at route prefix `/v2/models/{name}`, so a request reaches the
model's replica in one hop and each model gets its own replicas, batcher and cache. The root app at `/`
(serve/on_ray/root_app.py) answers the server-wide routes (health, server metadata) and 404s for unknown models.

The adapter builds the pipeline with Ray's metrics backend, checks the deployment's options (and warns where
Ray ignores a variable of serve/on_ray/contract.py set on the node), starts the
replica's own HTTP server beside Ray's where the ingress sends traffic there, and forwards Ray Serve's
lifecycle hooks (`reconfigure`, `check_health`, `record_autoscaling_stats`, `__del__`,
`__serve_build_asgi_app__`).
"""

import asyncio
import logging
import os

from ray import serve

from serve.http.asgi import InferenceRoutes
from serve.http.fastapi_routes import model_api
from serve.http.http_messages import HTTPLimits
from serve.http.replica_server import ReplicaHTTPServer
from serve.on_ray.autoscaling import IN_FLIGHT_METRIC
from serve.on_ray.contract import OPTISERVE_LOGGER
from serve.on_ray.deployment_options import (
    autoscaling_problem, running_deployment_config, warn_about_ignored_variables,
)
from serve.on_ray.metrics_backend import RayMetrics
from serve.on_ray.replica_http import keep_alive_timeout_s, listen_beside_ray, log_failure, replica_http_enabled
from serve.pipeline.inference import InferencePipeline
from serve.repository import route_prefix
from serve.settings import RuntimeConfig, ServeSettings

logger = logging.getLogger(OPTISERVE_LOGGER)
STOP_WAIT_S = 10.0  # longest a stopping replica waits for requests in flight on its own HTTP server


@serve.deployment
@serve.ingress()
class ModelServer:
    """Serves one artifact on Ray Serve: its InferencePipeline behind Ray's HTTP path, or its own server."""

    def __init__(self, artifact_dir: str, settings: ServeSettings, versions: "list[str] | None" = None) -> None:
        warn_about_ignored_variables(dict(os.environ))
        own_http = replica_http_enabled(dict(os.environ))  # HAProxy sends this model's requests to our own server
        problem = autoscaling_problem(running_deployment_config(), own_http)
        if problem:
            raise ValueError(problem)
        self._pipeline = InferencePipeline(artifact_dir, settings, versions, metrics_backend=RayMetrics())
        self._asgi_app = InferenceRoutes(self._pipeline.answer_inference, model_api(self._pipeline))
        self._http: ReplicaHTTPServer | None = None
        self._http_started: asyncio.Task | None = None
        if own_http:
            self._start_own_http(settings)

    def _start_own_http(self, settings: ServeSettings) -> None:
        manifest, versions = self._pipeline.manifest, self._pipeline.versions
        prefix = route_prefix(manifest.name, manifest.version, newest=versions[0] == manifest.version)
        observe_request = self._pipeline.metrics.observe_request
        self._http = ReplicaHTTPServer(self._pipeline.answer_inference, self._asgi_app, prefix,
                                       settings.max_body_bytes,
                                       on_refused=lambda status: observe_request(status, 0.0, "none"),
                                       keep_alive_timeout_s=keep_alive_timeout_s(os.environ),
                                       limits=HTTPLimits.from_settings(settings))
        listening = listen_beside_ray(self._http, dict(os.environ))
        self._http_started = asyncio.get_running_loop().create_task(listening)
        self._http_started.add_done_callback(log_failure)

    async def check_health(self) -> None:
        """Ray Serve calls this periodically: a replica whose own HTTP server failed to start is replaced.
        (async: Ray then calls it on the replica's event loop, not in a thread.)"""
        started = self._http_started
        if started is not None and started.done() and not started.cancelled() and started.exception():
            raise RuntimeError(f"this replica's HTTP server did not start: {started.exception()}")

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Ray Serve's custom autoscaling metrics: requests in flight on this replica's own HTTP server, which
        Ray's own count does not see (serve/on_ray/autoscaling.py adds them). async: on the event loop that
        counts them, not in one of Ray's threads."""
        return {IN_FLIGHT_METRIC: self._http.load_since_last_report() if self._http is not None else 0.0}

    async def __del__(self) -> None:
        """Ray Serve calls this once its drain is over: stop listening, let requests in flight finish (at most
        STOP_WAIT_S, within Ray's default graceful_shutdown_timeout_s of 20 s)."""
        if self._http_started is not None and not self._http_started.done():
            self._http_started.cancel()  # stopped before Ray's server appeared: never listen
        if self._http is not None:
            timeout_s = min(self._pipeline.config.request_timeout_ms / 1000, STOP_WAIT_S)
            unanswered = await self._http.close(timeout_s=timeout_s)
            if unanswered:
                logger.warning("optiserve: replica stopping with %d requests unanswered", unanswered)

    def __serve_build_asgi_app__(self):
        """Ray Serve calls this after __init__: inference on the bare ASGI path, the rest through FastAPI."""
        return self._asgi_app

    def reconfigure(self, user_config: dict) -> None:
        """Ray Serve calls this with the deployment's `user_config`: batching and cache change live."""
        self._pipeline.reconfigure(RuntimeConfig.model_validate(user_config))
