"""Ray Serve applications, built the same way for `optiserve serve` and for config files.

In a Serve config file (`serve deploy`, KubeRay's RayService) each model is an
application with `import_path: serve.builders:model_app` and
`args: {artifact_dir: ...}`, plus one root application with
`import_path: serve.builders:root_app` and `args: {models: [...]}` at route `/`.
Per-deployment options in the file (replicas, autoscaling, `user_config`)
override the defaults set here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from optimize.manifest import load_verified
from serve.app import ModelServer, ServerRoot
from serve.settings import ServeSettings


def deployment_name(model: str) -> str:
    return f"model-{model}"


def build_model_app(artifact_dir: Path, settings: ServeSettings) -> Application:
    manifest, _ = load_verified(artifact_dir)
    return ModelServer.options(
        name=deployment_name(manifest.name),
        num_replicas=settings.replicas,
        max_ongoing_requests=settings.replica_concurrency,
        ray_actor_options={"num_cpus": settings.replica_cpus},
        logging_config={"enable_access_log": settings.access_log},
        user_config=settings.runtime_config.model_dump(),
    ).bind(str(Path(artifact_dir).resolve()), settings)


class ModelAppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    artifact_dir: Path = Field(description="artifact directory (model.onnx + manifest.json) on every node")


class RootAppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(description="names of the model applications, for readiness and 404 messages")


def model_app(args: dict | ModelAppArgs) -> Application:
    """Config-file builder for one model; other settings come from OPTISERVE_* variables."""
    return build_model_app(ModelAppArgs.model_validate(args).artifact_dir, ServeSettings())


def root_app(args: dict | RootAppArgs) -> Application:
    return ServerRoot.bind(RootAppArgs.model_validate(args).models)
