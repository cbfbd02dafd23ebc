"""A model's Ray Serve deployment: one artifact behind cache, coalescing, batcher and runtime.

Each model version is its own Serve application at route prefix `/v2/models/{name}`,
so a request reaches the model's replica in one hop and each model gets its
own replicas, batcher and cache. The root app at `/` (serve/on_ray/root_app.py) answers
the server-wide routes (health, server metadata) and 404s for unknown models.
"""

import asyncio
import logging
import os
import time
from pathlib import Path

from ray import serve

from serve.http.asgi import JSON, ClientGone, InferenceRoutes, Reply, error_reply, json_reply
from serve.on_ray.autoscaling import IN_FLIGHT_METRIC
from serve.http.binary import HEADER_LENGTH, binary_inputs, binary_outputs, split_body
from serve.pipeline.batcher import BatchError, Batcher, DeadlineExceeded, QueueFull
from serve.pipeline.cache import ResultCache, answer_scope, cache_key
from serve.pipeline.coalesce import Coalescer
from serve.on_ray.deployment_options import autoscaling_problem, running_deployment_config
from serve.http.fastapi_routes import model_api
from serve.http.guards import check_bearer_token, check_element_count
from serve.http.http_messages import HTTPLimits
from serve.http.ingress_stamp import IngressStamp
from serve.observability.metrics import ServeMetrics
from serve.runtimes.model import load_model
from serve.http.protocol import (
    ProtocolError, decode_inputs, encode_response, model_metadata, parse_request,
    requested_outputs, requested_timeout_ms,
)
from serve.on_ray.replica_http import ReplicaHTTPServer, keep_alive_timeout_s, log_failure, replica_http_enabled
from serve.repository import route_prefix
from serve.settings import RuntimeConfig, ServeSettings
from serve.pipeline.shared_cache import RedisTier
from serve.runtimes.text import tokenize_in_calling_thread

logger = logging.getLogger("ray.serve.optiserve")
CACHE_HEADER = "X-Optiserve-Cache"  # hit, coalesced, miss, or off: where an answer came from
STOP_WAIT_S = 10.0  # longest a stopping replica waits for requests in flight on its own HTTP server

@serve.deployment
@serve.ingress()
class ModelServer:
    """Serves one artifact: cache, then dynamic batcher, then onnxruntime."""

    def __init__(self, artifact_dir: str, settings: ServeSettings, versions: "list[str] | None" = None) -> None:
        own_http = replica_http_enabled(dict(os.environ))  # HAProxy sends this model's requests to our own server
        problem = autoscaling_problem(running_deployment_config(), own_http)
        if problem:
            raise ValueError(problem)
        self._model = load_model(Path(artifact_dir), settings.intra_op_threads, settings)
        if self._model.manifest.text_input is not None:
            tokenize_in_calling_thread(on_gpu=not self._model.on_cpu)
        self._versions = versions or [self._model.manifest.version]
        self._token = settings.auth_token.get_secret_value() if settings.auth_token else None
        self._max_body_bytes = settings.max_body_bytes
        self._max_elements = settings.max_elements
        self._max_strings = settings.max_strings
        self._max_string_bytes = settings.max_string_bytes
        self._manifest = self._model.manifest
        self._metrics = ServeMetrics(self._manifest.name, self._manifest.version)
        config = settings.runtime_config
        self._cache = ResultCache(config.cache_max_bytes, config.cache_ttl_s)
        self._answer_scope = answer_scope(self._manifest, self._model.execution_provider)  # cache keys' model part
        self._coalescer = Coalescer()
        self._shared = (
            RedisTier(settings.redis_url, self._manifest.outputs, settings.redis_timeout_ms / 1000,
                      config.cache_ttl_s, on_failure=self._metrics.observe_shared_failure,
                      on_rejected=self._metrics.observe_shared_rejected)
            if settings.redis_url else None
        )
        self._background: set[asyncio.Task] = set()
        self._arriving = 0  # requests received whose inputs are not yet queued for the batcher
        self._ingress = IngressStamp(settings.ingress_stamps_requests, settings.ingress_queue_timeout_ms)
        self._config = config
        self._batcher = Batcher(
            self._model.run, config.max_batch_size, config.max_wait_ms / 1000,
            observer=self._metrics, more_coming=lambda: self._arriving > 0, max_queue=config.max_queue_size,
            # GPU calls stay in the batcher's thread: their first call of a shape may capture a CUDA graph
            inline_below_s=settings.inline_call_us / 1e6 if self._model.on_cpu else 0.0,
        )
        self._asgi_app = InferenceRoutes(self.answer_inference, model_api(self))
        self._http: ReplicaHTTPServer | None = None
        self._http_started: asyncio.Task | None = None
        if own_http:
            newest = self._versions[0] == self._manifest.version
            prefix = route_prefix(self._manifest.name, self._manifest.version, newest)
            self._http = ReplicaHTTPServer(self.answer_inference, self._asgi_app, prefix, settings.max_body_bytes,
                                           on_refused=lambda status: self._metrics.observe_request(status, 0.0, "none"),
                                           keep_alive_timeout_s=keep_alive_timeout_s(os.environ),
                                           limits=HTTPLimits.from_settings(settings))
            self._http_started = asyncio.get_running_loop().create_task(self._http.listen_beside_ray(dict(os.environ)))
            self._http_started.add_done_callback(log_failure)

    async def check_health(self) -> None:
        """Ray Serve calls this periodically: a replica whose own HTTP server failed to start is replaced.
        (async: Ray then calls it on the replica's event loop, not in a thread.)"""
        started = self._http_started
        if started is not None and started.done() and not started.cancelled() and started.exception():
            raise RuntimeError(f"this replica's HTTP server did not start: {started.exception()}")

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Ray Serve's custom autoscaling metrics: requests in flight on this replica's own HTTP server, which
        Ray's own count does not see (serve/on_ray/autoscaling.py adds them). async: on the event loop that counts
        them, not in one of Ray's threads."""
        return {IN_FLIGHT_METRIC: self._http.load_since_last_report() if self._http is not None else 0.0}

    async def __del__(self) -> None:
        """Ray Serve calls this once its drain is over: stop listening, let requests in flight finish (at most
        STOP_WAIT_S, within Ray's default graceful_shutdown_timeout_s of 20 s)."""
        if self._http_started is not None and not self._http_started.done():
            self._http_started.cancel()  # stopped before Ray's server appeared: never listen
        if self._http is not None:
            unanswered = await self._http.close(timeout_s=min(self._config.request_timeout_ms / 1000, STOP_WAIT_S))
            if unanswered:
                logger.warning("optiserve: replica stopping with %d requests unanswered", unanswered)

    def __serve_build_asgi_app__(self):
        """Ray Serve calls this after __init__: inference on the bare ASGI path, the rest through FastAPI."""
        return self._asgi_app

    def reconfigure(self, user_config: dict) -> None:
        """Ray Serve calls this with the deployment's `user_config`: batching and cache change live."""
        config = RuntimeConfig.model_validate(user_config)
        self._batcher.configure(config.max_batch_size, config.max_wait_ms / 1000, config.max_queue_size)
        self._cache.resize(config.cache_max_bytes, config.cache_ttl_s)
        self._config = config

    def metadata(self, authorization: str | None, version: str | None) -> Reply:
        return (self._unauthorized(authorization) or self._unknown_version(version)
                or json_reply(model_metadata(self._manifest, self._versions, self._model.execution_provider)))

    def ready(self, version: str | None) -> Reply:
        return self._unknown_version(version) or json_reply({"name": self._manifest.name, "ready": True})

    async def answer_inference(self, headers: dict[str, str], read_body, version: str | None) -> Reply:
        """One inference request, from its (lower-cased) headers and body reader to exactly one reply."""
        started = time.monotonic()
        waited = self._ingress.waited(headers)
        if waited is not None:
            self._metrics.observe_ingress_wait(waited)
        try:
            reply = (self._unauthorized(headers.get("authorization")) or self._unknown_version(version)
                     or await self._infer(headers, read_body, started - (waited or 0.0)))
        except ProtocolError as error:
            reply = error_reply(error.status, error.message, error.headers)
        except BatchError as error:  # a bug: the model failed on inputs that passed validation
            reply = error_reply(500, str(error))
        except ClientGone:
            raise
        except Exception as error:  # still a bug, but answered in JSON
            reply = error_reply(500, f"internal error: {error!r}")
        self._metrics.observe_request(reply.status, time.monotonic() - started, reply.headers.get(CACHE_HEADER, "none"))
        return reply

    async def _read_and_check(self, headers: dict[str, str], read_body, arrived: float) -> tuple:
        """Parse and check the request; returns it, its input arrays, outputs asked for and its deadline.

        `arrived`: when the server received it (time.monotonic()): at the ingress, where it says so.
        """
        self._arriving += 1
        try:
            body = await read_body(self._max_body_bytes)
            header, tail = split_body(body, headers.get(HEADER_LENGTH.lower()))
            parsed = parse_request(header)
            check_element_count(parsed, self._max_elements, self._max_strings)
            timeout_s = requested_timeout_ms(parsed, self._config.request_timeout_ms) / 1000
            inputs = decode_inputs(parsed, self._manifest, binary_inputs(parsed, tail), self._max_string_bytes)
            return parsed, inputs, requested_outputs(parsed, self._manifest), arrived + timeout_s
        finally:
            self._arriving -= 1

    async def _infer(self, headers: dict[str, str], read_body, arrived: float) -> Reply:
        request, inputs, outputs, deadline = await self._read_and_check(headers, read_body, arrived)
        try:
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"deadline passed before the request reached the model's queue, "
                                       f"{1000 * (time.monotonic() - arrived):.0f} ms after the server received it "
                                       "(time queued at the ingress counts)")
            if self._cache.max_bytes > 0:
                result, cache = await self._cached(inputs, outputs, deadline)
            else:
                result, cache = await self._compute(inputs, outputs, deadline), "off"
        except QueueFull as error:
            raise ProtocolError(self._config.reject_status, f"server busy: {error}; retry after 1 s",
                                {"Retry-After": "1"}) from None
        except DeadlineExceeded as error:
            raise ProtocolError(504, f"{error} (timeout {self._config.request_timeout_ms:g} ms unless "
                                     "parameters.timeout_ms says otherwise)") from None
        body, header_length = encode_response(self._manifest, request.id, result, binary_outputs(request, outputs))
        if header_length is None:
            return Reply(200, body, JSON, {CACHE_HEADER: cache})
        return Reply(200, body, "application/octet-stream", {CACHE_HEADER: cache, HEADER_LENGTH: str(header_length)})

    async def _cached(self, inputs: dict, outputs: tuple[str, ...], deadline: float) -> tuple[dict, str]:
        """Cache, then identical requests in flight computed once, then the batcher.

        Returns the result and where it came from: hit, coalesced or miss.
        """
        key = cache_key(self._answer_scope, inputs, outputs)
        result = self._cache.get(key)
        self._metrics.observe_cache(hit=result is not None)
        if result is not None:
            return result, "hit"
        result, coalesced = await self._coalescer.run(
            key, lambda: self._shared_or_compute(key, inputs, outputs, deadline), deadline
        )
        if coalesced:
            self._metrics.observe_coalesced()
            return result, "coalesced"
        evictions = self._cache.evictions
        self._cache.put(key, result)
        self._metrics.observe_cache_store(self._cache.bytes, self._cache.evictions - evictions)
        return result, "miss"

    async def _shared_or_compute(self, key: bytes, inputs: dict, outputs: tuple[str, ...], deadline: float) -> dict:
        if self._shared is None:
            return await self._compute(inputs, outputs, deadline)
        rows = len(next(iter(inputs.values())))  # every input and output has the request's rows on axis 0
        result = await self._shared.get(key, outputs, rows)
        if result is not None:
            self._metrics.observe_shared_hit()
            return result
        result = await self._compute(inputs, outputs, deadline)
        task = asyncio.get_running_loop().create_task(self._shared.put(key, result))
        self._background.add(task)  # keep a reference until it is done
        task.add_done_callback(self._background.discard)
        return result

    async def _compute(self, inputs: dict, outputs: tuple[str, ...], deadline: float) -> dict:
        computed = await self._batcher.submit(inputs, deadline)
        return {name: computed[name] for name in outputs}

    def _unauthorized(self, authorization: str | None) -> "Reply | None":
        try:
            check_bearer_token(authorization, self._token)
        except ProtocolError as error:
            return error_reply(error.status, error.message, error.headers)
        return None

    def _unknown_version(self, version: "str | None") -> "Reply | None":
        if version is None or version == self._manifest.version:
            return None
        return error_reply(
            404, f"model {self._manifest.name!r} has no version {version!r}; versions served: "
                 f"{', '.join(self._versions)}"
        )
