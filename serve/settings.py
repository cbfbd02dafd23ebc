"""Server settings: one validated place; env vars OPTISERVE_<FIELD> or CLI flags."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RuntimeConfig(BaseModel):
    """What a running replica can change without a restart (Ray Serve `user_config`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(32, ge=1, description="most rows the batcher merges into one inference call")
    max_wait_ms: float = Field(
        1.0, ge=0, le=1000,
        description="longest a request waits for others to join its batch (only while more are arriving)",
    )
    cache_max_bytes: int = Field(64 << 20, ge=0, description="result cache budget per replica, in bytes of the memory its entries really hold (a one-row digits answer about 800); 0 disables it")
    cache_ttl_s: float | None = Field(None, gt=0, description="forget cached results older than this; None keeps them")
    max_queue_size: int = Field(
        96, ge=1, description="requests waiting in a replica's batcher before new ones are rejected (back-pressure)"
    )
    request_timeout_ms: float = Field(
        10_000, gt=0, le=600_000,
        description="default deadline per request; a request may ask for its own with parameters.timeout_ms",
    )
    reject_status: Literal[503, 429] = Field(
        503, description="status for requests rejected because the queue is full (with Retry-After)"
    )

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> "RuntimeConfig":
        if self.max_queue_size < self.max_batch_size:
            raise ValueError(
                f"max_queue_size must be at least max_batch_size ({self.max_batch_size}), got {self.max_queue_size}"
            )
        return self


# Per replica, one batch computes while the next fills: the replica must admit both.
CONCURRENT_BATCHES = 2


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPTISERVE_", frozen=True)

    host: str = Field("127.0.0.1", description="address the HTTP ingress binds")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port for the KServe V2 API")
    metrics_port: int = Field(
        8080, ge=1, le=65535, description="port of Ray's metrics agent, where Prometheus scrapes"
    )
    ingress: Literal["haproxy", "proxy"] = Field(
        "haproxy", description="Ray Serve HTTP ingress: bundled HAProxy (measured faster) or the Python proxy"
    )
    replicas: int = Field(1, ge=1, description="replicas per model")
    replica_cpus: float = Field(1.0, ge=0, description="CPUs Ray reserves for each model replica")
    max_batch_size: int = RuntimeConfig.model_fields["max_batch_size"]
    max_wait_ms: float = RuntimeConfig.model_fields["max_wait_ms"]
    max_ongoing_requests: int = Field(
        0, ge=0, description="Ray Serve's per-replica concurrency cap; 0 means 4 x max_batch_size"
    )
    max_queued_requests: int = Field(
        0, ge=0, description="requests a replica holds beyond max_ongoing_requests before Ray rejects at once "
        "with reject_status; 0 means max_ongoing_requests",
    )
    cache_max_bytes: int = RuntimeConfig.model_fields["cache_max_bytes"]
    cache_ttl_s: float | None = RuntimeConfig.model_fields["cache_ttl_s"]
    max_queue_size: int = RuntimeConfig.model_fields["max_queue_size"]
    request_timeout_ms: float = RuntimeConfig.model_fields["request_timeout_ms"]
    reject_status: Literal[503, 429] = RuntimeConfig.model_fields["reject_status"]
    intra_op_threads: int = Field(
        1, ge=1, description="threads per replica for the model runtime (onnxruntime, LiteRT, torch)")
    inline_call_us: float = Field(
        200.0, ge=0, le=10_000, description="CPU model calls that typically take less than this (microseconds, a moving "
        "average) run on the replica's event loop instead of the batcher's thread, whose hop costs more than they do "
        "(the digits MLP); 0 always uses the thread",
    )
    text_token_budget: int | None = Field(
        None, ge=1, description="text models: most padded tokens per model call; a batch is sorted by length and cut "
        "into groups within it and text_padding_limit. Default: no limit of its own (1: one sentence per call)",
    )
    text_padding_limit: float | None = Field(
        None, ge=0, le=1, description="text models: largest share of a model call's tokens that may be padding; a "
        "length-sorted batch is cut into groups within it. Default: 0.1 on a CPU (similar lengths share a call: "
        "a quarter less CPU per sentence than one per call, measured), 1 on a GPU (the whole batch in one call)",
    )
    replica_gpus: float | None = Field(
        None, ge=0, description="GPUs Ray reserves for each replica of a GPU-target artifact; default 1 where this "
        "node has a GPU, else 0 (the artifact is then served on the CPU). CPU-target artifacts never ask for one",
    )
    torch_dtype: Literal["float16", "bfloat16", "float32"] = Field(
        "float16", description="torch runtime on CUDA: autocast dtype for GPU-target artifacts (outputs are FP32)"
    )
    torch_cuda_graphs: bool = Field(
        True, description="torch runtime on CUDA: capture each padded input shape into a CUDA graph and replay it "
        "(one launch per call instead of one per op); False runs the program op by op",
    )
    tensorrt_engine: bool = Field(
        True, description="run an artifact's TensorRT engine where TensorRT and the GPU that built it are present; "
        "False serves its ONNX model on onnxruntime instead",
    )
    stop_grace_s: float = Field(
        5.0, ge=0, le=120, description="on SIGTERM/SIGINT, how long requests in flight get to finish after the "
        "HAProxy ingress stops accepting connections, before Ray stops the replicas",
    )
    drain_period_s: float = Field(
        2.0, ge=0, description="how long a stopping replica stays reachable so the ingress can deregister it"
    )
    control_loop_interval_s: float = Field(
        0.5, gt=0, le=5, description="Ray Serve controller's loop period: Ray's 0.1 s default kept the idle "
        "controller at 4% of a core on 2 cores (docs/BENCHMARKS.md); 0.5 s costs under 1% and reacts to a "
        "dead replica or a scaling decision at most 0.4 s later",
    )
    ingress_request_metrics: bool = Field(
        False, description="Ray's HAProxy HTTP metrics (ray_serve_num_http_requests and friends): HAProxy writes a "
        "log line per request that Ray parses in Python; off, digits served 1.21x the requests per second on 2 cores "
        "(docs/BENCHMARKS.md). optiserve_requests and its latency histogram count every request in the replica "
        "either way",
    )
    retry_lost_requests: bool = Field(
        True, description="HAProxy resends a request to another replica when its replica closed the connection "
        "without an answer (a replica that died mid-request) or answered garbage, not only when it could not "
        "connect (Ray's default). Safe because inference is a pure function of the request; requests over "
        "HAProxy's 16 KiB buffer are not resent",
    )
    ingress_admission: bool = Field(
        True, description="HAProxy ingress: let each model replica hold at most replica_concurrency requests and "
        "queue the rest in HAProxy, which refuses (reject_status + Retry-After) past ingress_queue_per_replica "
        "queued per replica, without the busy replica having to read the request (serve/on_ray/ingress.py). It also "
        "answers HAProxy's own errors in JSON. False runs the configuration Ray writes, unchanged",
    )
    replica_http: bool = Field(
        True, description="HAProxy ingress with admission: each model replica answers HTTP on its own server "
        "(serve/http/replica_server.py), beside Ray Serve's, and HAProxy sends the model's requests there; health "
        "checks and draining stay Ray's. Digits served 2x the requests per second at 8 clients on 2 cores "
        "(docs/BENCHMARKS.md). Autoscaling then needs serve.on_ray.autoscaling:ongoing_requests_policy (deploy/)",
    )
    # Limits of each replica's own HTTP server (serve/http/replica_connection.py), which Ray binds on `host` like its
    # own: a client may reach it without HAProxy, whose smaller buffer (16 KiB) refuses large heads first.
    http_max_request_line_bytes: int = Field(
        8 << 10, ge=256, le=1 << 20, description="replica's own HTTP server: longest request target (the part of the "
        "request line a client can grow); longer gets 414",
    )
    http_max_header_bytes: int = Field(
        64 << 10, ge=1024, le=16 << 20, description="replica's own HTTP server: most bytes of header names and values "
        "in one request; more gets 431",
    )
    http_max_headers: int = Field(
        100, ge=8, le=10_000, description="replica's own HTTP server: most header lines in one request; more gets 431"
    )
    http_max_pipelined: int = Field(
        16, ge=1, le=1024, description="replica's own HTTP server: requests one connection may have received and not "
        "yet answered; at this many it stops reading that connection until one is answered (HAProxy sends one at "
        "a time)",
    )
    http_receive_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="replica's own HTTP server: longest it waits for a whole request (line, "
        "headers, body) from its first byte, however slowly its bytes keep coming; then 408 and the connection "
        "closes",
    )
    ingress_niceness: int | None = Field(
        0, ge=-20, le=19, description="HAProxy ingress with admission: its scheduling niceness. Ray starts it at "
        "the 15 of its worker processes, the replicas' too, so under full CPU its refusals waited behind model "
        "calls (probe refusals p99 50-72 ms at 3x overload on 2 cores, 4-7 ms at 0 to 5: docs/RELIABILITY.md). "
        "Below 15 needs CAP_SYS_NICE (root); without it HAProxy stays at 15. None: leave it as Ray starts it",
    )
    ingress_queue_per_replica: int = Field(
        64, ge=1, description="HAProxy ingress with admission: requests queued per usable model replica before "
        "new ones are refused; bounds the wait of accepted requests under overload",
    )
    haproxy_threads: int = Field(
        default_factory=lambda: min(4, max(1, (os.cpu_count() or 2) // 2)),
        ge=1, description="HAProxy worker threads (default: half the cores, 1 to 4)",
    )
    redis_url: str | None = Field(
        None, description="shared cache tier, e.g. redis://127.0.0.1:6379/0; replicas then share results"
    )
    redis_timeout_ms: float = Field(
        50, gt=0, le=5000, description="longest a shared-cache call may take before it counts as a miss"
    )
    auth_token: SecretStr | None = Field(
        None, description="if set, inference and model metadata routes need 'Authorization: Bearer <token>'"
    )
    max_body_bytes: int = Field(32 << 20, ge=1024, description="largest request body; larger ones get 413")
    max_elements: int = Field(1 << 23, ge=1, description="most tensor elements one request may declare (413 above)")
    max_strings: int = Field(4096, ge=1, description="most BYTES (text) elements one request may declare (413 above): "
                             "each costs a Python string and a tokenizer call, unlike a number")
    max_string_bytes: int = Field(64 << 10, ge=1, description="longest BYTES element in bytes of UTF-8 (413 above), "
                                  "checked before tokenizing: a text model reads only its first max_length tokens")
    access_log: bool = Field(False, description="log every request in the replica logs and, with the HAProxy ingress, "
                             "in HAProxy's log target (RAY_SERVE_HAPROXY_LOG_TARGET); costs throughput. Also raises "
                             "Ray's replica logger to INFO unless replica_log_level says otherwise")
    replica_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        None, description="level of Ray Serve's own logger (ray.serve) in model replicas. Default: INFO with "
        "access_log, else WARNING: at INFO Ray builds an access-log record for every request and only then drops "
        "it, about 4% of a replica's event loop per digits request (docs/BENCHMARKS.md). Ray's own INFO lines "
        "(replica start and stop) leave the replica logs; optiserve's (the runtime each model got) stay. With "
        "RAY_SERVE_LOG_TO_STDERR=0, Ray routes print and stderr through this logger at INFO: set INFO then",
    )
    metrics_report_interval_ms: int = Field(
        2000, ge=100, description="how often replicas push metrics to Ray's metrics agent"
    )

    @field_validator("replica_log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def replica_ray_log_level(self) -> str:
        return self.replica_log_level or ("INFO" if self.access_log else "WARNING")

    @model_validator(mode="after")
    def _ports_differ(self) -> "ServeSettings":
        if self.metrics_port == self.port:  # Ray's metrics agent binds first: the ingress would never listen
            raise ValueError(f"metrics_port: expected a port other than the HTTP port, got {self.port} for both")
        return self

    @model_validator(mode="after")
    def _access_log_is_logged(self) -> "ServeSettings":
        if self.access_log and self.replica_log_level in ("WARNING", "ERROR"):
            raise ValueError(f"access_log writes at INFO: expected replica_log_level DEBUG or INFO (or unset) with "
                             f"it, got {self.replica_log_level}")
        return self

    @model_validator(mode="after")
    def _concurrency_admits_full_batches(self) -> "ServeSettings":
        needed = self.max_batch_size * CONCURRENT_BATCHES
        if self.max_ongoing_requests and self.max_ongoing_requests < needed:
            raise ValueError(
                f"max_ongoing_requests must be at least max_batch_size x {CONCURRENT_BATCHES} concurrent batches "
                f"({needed}), got {self.max_ongoing_requests}: Ray Serve would cap how many requests reach a "
                "replica, so batches could never fill while the previous one computes"
            )
        return self

    @model_validator(mode="after")
    def _runtime_config_holds(self) -> "ServeSettings":
        """RuntimeConfig's own rules, checked here too: at start-up, not when the first model app is built."""
        try:
            self.runtime_config
        except ValidationError as error:
            raise ValueError("; ".join(problem["msg"].removeprefix("Value error, ") for problem in error.errors()))
        return self

    @property
    def runtime_config(self) -> RuntimeConfig:
        return RuntimeConfig.model_validate({name: getattr(self, name) for name in RuntimeConfig.model_fields})

    @property
    def ingress_queue_timeout_ms(self) -> int:
        """HAProxy's queue timeout with admission: the default request timeout."""
        return max(1, round(self.request_timeout_ms))

    @property
    def ingress_stamps_requests(self) -> bool:
        """Whether HAProxy stamps each request with when it received it (only with optiserve's rewrite)."""
        return self.ingress == "haproxy" and self.ingress_admission

    @property
    def replica_concurrency(self) -> int:
        return self.max_ongoing_requests or 4 * self.max_batch_size

    @property
    def replica_queue_limit(self) -> int:
        return self.max_queued_requests or self.replica_concurrency
