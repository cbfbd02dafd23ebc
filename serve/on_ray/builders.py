"""Ray Serve applications, built the same way for `optiserve serve` and for config files.

In a Serve config file (`serve deploy`, KubeRay's RayService) each model is an
application with `import_path: serve.on_ray.builders:model_app` and
`args: {artifact_dir: ...}`, plus one root application with
`import_path: serve.on_ray.builders:root_app` and `args: {models: [...]}` at route `/`.
Per-deployment options in the file (replicas, autoscaling, `user_config`)
override the defaults set here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application
from ray.serve.config import BackpressureConfig

from optimize.manifest import Manifest, load_verified
from serve.on_ray.deployment import ModelServer
from serve.runtimes.providers import gpu_present, replica_gpus
from serve.on_ray.root_app import ServerRoot
from serve.settings import ServeSettings


def deployment_name(app_name: str) -> str:
    return f"model-{app_name}"


def build_model_app(
    artifact_dir: Path, settings: ServeSettings, versions: tuple[str, ...] | None = None, app_name: str | None = None,
    verified: Manifest | None = None,
) -> Application:
    """One model version's application; `versions` lists all served versions of the model, newest first.

    `verified` is the artifact's manifest where the caller has already checked its sha256 (the model repository
    does); otherwise it is checked here. Each replica checks it again where it loads the model.
    """
    manifest = verified or load_verified(artifact_dir)[0]
    return ModelServer.options(**model_deployment_options(manifest, settings, app_name)).bind(
        str(Path(artifact_dir).resolve()), settings, list(versions or [manifest.version])
    )


def model_deployment_options(manifest: Manifest, settings: ServeSettings, app_name: str | None = None) -> dict:
    """The Ray Serve deployment options of one model version's application."""
    return dict(
        name=deployment_name(app_name or manifest.name),
        num_replicas=settings.replicas,
        max_ongoing_requests=settings.replica_concurrency,
        # Requests beyond max_ongoing_requests wait in the replica; past this many more, Ray answers
        # reject_status with Retry-After at once, before the handler (and its event loop) sees them.
        max_queued_requests=settings.replica_queue_limit,
        backpressure_config=BackpressureConfig(status_code=settings.reject_status, retry_after_s=1),
        # a GPU-target artifact asks Ray for a GPU where this node has one (OPTISERVE_REPLICA_GPUS overrides)
        ray_actor_options={"num_cpus": settings.replica_cpus,
                           "num_gpus": replica_gpus(manifest.target, settings.replica_gpus, gpu_present())},
        logging_config={"enable_access_log": settings.access_log, "log_level": settings.replica_ray_log_level},
        user_config=settings.runtime_config.model_dump(),
    )


class ModelAppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    artifact_dir: Path = Field(description="artifact directory (model.onnx + manifest.json) on every node")
    versions: list[str] | None = Field(
        None, description="every served version of this model, newest first (for metadata and 404 messages)"
    )


class RootAppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(description="names of the models served, for 404 messages")
    apps: list[str] | None = Field(
        None, description="Serve applications that must run for /v2/health/ready (default: one per model)"
    )
    routes_url: str | None = Field(
        None, description="the HTTP ingress's /-/routes, e.g. http://127.0.0.1:8000/-/routes: if set, "
        "/v2/health/ready also waits until the ingress routes to every application",
    )


def model_app(args: dict | ModelAppArgs) -> Application:
    """Config-file builder for one model; other settings come from OPTISERVE_* variables."""
    parsed = ModelAppArgs.model_validate(args)
    return build_model_app(parsed.artifact_dir, ServeSettings(), tuple(parsed.versions or ()) or None)


def root_app(args: dict | RootAppArgs) -> Application:
    parsed = RootAppArgs.model_validate(args)
    return ServerRoot.bind(parsed.models, parsed.apps, parsed.routes_url)
