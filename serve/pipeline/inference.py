"""One model's request pipeline, from a request's headers and body to exactly one reply, without Ray.

Auth, then the version asked for, then the body read within its limits, parsed and checked (shapes, sizes)
before any work; then the deadline, counted from when the ingress received the request (its stamp, where it
wrote one); then the result cache, identical requests in flight computed once, the shared (Redis) tier and the
dynamic batcher in front of the model's runtime. Every failure becomes a reply: a client's is a 4xx saying
what was expected, a 500 is a bug. Each reply is counted in the metrics.

The HTTP front ends (serve/http/asgi.py, serve/http/replica_server.py) call `answer_inference`; the Ray
deployment (serve/on_ray/deployment.py) builds one pipeline per replica and forwards its lifecycle to it.
"""

import asyncio
import time
from pathlib import Path

from serve.http.asgi import JSON, ClientGone, Reply, error_reply, json_reply
from serve.http.binary import HEADER_LENGTH, binary_inputs, binary_outputs, split_body
from serve.http.guards import check_bearer_token, check_element_count
from serve.http.ingress_stamp import IngressStamp
from serve.http.protocol import (
    ProtocolError, decode_inputs, encode_response, model_metadata, parse_request,
    requested_outputs, requested_timeout_ms,
)
from serve.observability.backend import InMemoryMetrics, MetricsBackend
from serve.observability.metrics import ServeMetrics
from serve.pipeline.batcher import BatchError, Batcher, DeadlineExceeded, QueueFull
from serve.pipeline.cache import ResultCache, answer_scope, cache_key
from serve.pipeline.coalesce import Coalescer
from serve.pipeline.shared_cache import RedisTier
from serve.runtimes.model import load_model
from serve.runtimes.text import tokenize_in_calling_thread
from serve.settings import RuntimeConfig, ServeSettings

CACHE_HEADER = "X-Optiserve-Cache"  # hit, coalesced, miss, or off: where an answer came from


class InferencePipeline:
    """Serves one artifact: cache, then dynamic batcher, then the model's runtime.

    `versions`: every served version of the model, newest first (metadata, 404s); `metrics_backend`: where the
    metrics go (default: kept in this process, `self.metrics_backend`).
    """

    def __init__(self, artifact_dir: "Path | str", settings: ServeSettings, versions: "list[str] | None" = None,
                 metrics_backend: "MetricsBackend | None" = None) -> None:
        self._model = load_model(Path(artifact_dir), settings.intra_op_threads, settings)
        if self._model.manifest.text_input is not None:
            tokenize_in_calling_thread(on_gpu=not self._model.on_cpu)
        self.manifest = self._model.manifest
        self.versions = versions or [self.manifest.version]
        self._token = settings.auth_token.get_secret_value() if settings.auth_token else None
        self._max_body_bytes = settings.max_body_bytes
        self._max_elements = settings.max_elements
        self._max_strings = settings.max_strings
        self._max_string_bytes = settings.max_string_bytes
        self.metrics_backend = metrics_backend if metrics_backend is not None else InMemoryMetrics()
        self.metrics = ServeMetrics(self.manifest.name, self.manifest.version, self.metrics_backend)
        self.config = settings.runtime_config
        self._cache = ResultCache(self.config.cache_max_bytes, self.config.cache_ttl_s)
        self._answer_scope = answer_scope(self.manifest, self._model.execution_provider)  # cache keys' model part
        self._coalescer = Coalescer()
        self._shared = (
            RedisTier(settings.redis_url, self.manifest.outputs, settings.redis_timeout_ms / 1000,
                      self.config.cache_ttl_s, on_failure=self.metrics.observe_shared_failure,
                      on_rejected=self.metrics.observe_shared_rejected)
            if settings.redis_url else None
        )
        self._background: set[asyncio.Task] = set()
        self._arriving = 0  # requests received whose inputs are not yet queued for the batcher
        self._ingress = IngressStamp(settings.ingress_stamps_requests, settings.ingress_queue_timeout_ms)
        self._batcher = Batcher(
            self._model.run, self.config.max_batch_size, self.config.max_wait_ms / 1000,
            observer=self.metrics, more_coming=lambda: self._arriving > 0, max_queue=self.config.max_queue_size,
            # GPU calls stay in the batcher's thread: their first call of a shape may capture a CUDA graph
            inline_below_s=settings.inline_call_us / 1e6 if self._model.on_cpu else 0.0,
        )

    def reconfigure(self, config: RuntimeConfig) -> None:
        """Batching and cache settings, changed live (on Ray: the deployment's `user_config`)."""
        self._batcher.configure(config.max_batch_size, config.max_wait_ms / 1000, config.max_queue_size)
        self._cache.resize(config.cache_max_bytes, config.cache_ttl_s)
        self.config = config

    def metadata(self, authorization: str | None, version: str | None) -> Reply:
        return (self._unauthorized(authorization) or self._unknown_version(version)
                or json_reply(model_metadata(self.manifest, self.versions, self._model.execution_provider)))

    def ready(self, version: str | None) -> Reply:
        return self._unknown_version(version) or json_reply({"name": self.manifest.name, "ready": True})

    async def answer_inference(self, headers: dict[str, str], read_body, version: str | None) -> Reply:
        """One inference request, from its (lower-cased) headers and body reader to exactly one reply."""
        started = time.monotonic()
        waited = self._ingress.waited(headers)
        if waited is not None:
            self.metrics.observe_ingress_wait(waited)
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
        self.metrics.observe_request(reply.status, time.monotonic() - started, reply.headers.get(CACHE_HEADER, "none"))
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
            timeout_s = requested_timeout_ms(parsed, self.config.request_timeout_ms) / 1000
            inputs = decode_inputs(parsed, self.manifest, binary_inputs(parsed, tail), self._max_string_bytes)
            return parsed, inputs, requested_outputs(parsed, self.manifest), arrived + timeout_s
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
            raise ProtocolError(self.config.reject_status, f"server busy: {error}; retry after 1 s",
                                {"Retry-After": "1"}) from None
        except DeadlineExceeded as error:
            raise ProtocolError(504, f"{error} (timeout {self.config.request_timeout_ms:g} ms unless "
                                     "parameters.timeout_ms says otherwise)") from None
        body, header_length = encode_response(self.manifest, request.id, result, binary_outputs(request, outputs))
        if header_length is None:
            return Reply(200, body, JSON, {CACHE_HEADER: cache})
        return Reply(200, body, "application/octet-stream", {CACHE_HEADER: cache, HEADER_LENGTH: str(header_length)})

    async def _cached(self, inputs: dict, outputs: tuple[str, ...], deadline: float) -> tuple[dict, str]:
        """Cache, then identical requests in flight computed once, then the batcher.

        Returns the result and where it came from: hit, coalesced or miss.
        """
        key = cache_key(self._answer_scope, inputs, outputs)
        result = self._cache.get(key)
        self.metrics.observe_cache(hit=result is not None)
        if result is not None:
            return result, "hit"
        result, coalesced = await self._coalescer.run(
            key, lambda: self._shared_or_compute(key, inputs, outputs, deadline), deadline
        )
        if coalesced:
            self.metrics.observe_coalesced()
            return result, "coalesced"
        evictions = self._cache.evictions
        self._cache.put(key, result)
        self.metrics.observe_cache_store(self._cache.bytes, self._cache.evictions - evictions)
        return result, "miss"

    async def _shared_or_compute(self, key: bytes, inputs: dict, outputs: tuple[str, ...], deadline: float) -> dict:
        if self._shared is None:
            return await self._compute(inputs, outputs, deadline)
        rows = len(next(iter(inputs.values())))  # every input and output has the request's rows on axis 0
        result = await self._shared.get(key, outputs, rows)
        if result is not None:
            self.metrics.observe_shared_hit()
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
        if version is None or version == self.manifest.version:
            return None
        return error_reply(
            404, f"model {self.manifest.name!r} has no version {version!r}; versions served: "
                 f"{', '.join(self.versions)}"
        )
