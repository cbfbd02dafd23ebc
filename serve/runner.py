"""Start and stop the embedded server: a local Ray instance with Serve on it."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from optimize.manifest import Manifest, load_verified
from serve.settings import ServeSettings

ROOT_APP = "optiserve"
log = logging.getLogger("optiserve.serve")


def verify_artifacts(artifact_dirs: list[Path]) -> list[Manifest]:
    """Check every artifact before Ray starts, so a bad one fails fast (ArtifactError)."""
    manifests = [load_verified(Path(d))[0] for d in artifact_dirs]
    names = [m.name for m in manifests]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"artifacts: expected one artifact per model name, got several for {', '.join(duplicates)}")
    if ROOT_APP in names:
        raise ValueError(f"artifacts: the model name {ROOT_APP!r} is reserved for the server itself")
    return manifests


def ray_serve_environment(settings: ServeSettings) -> dict[str, str]:
    """Ray Serve knobs that only exist as environment variables, read by the processes Ray starts.

    Each was measured with benchmarks/serve_bench.py (docs/BENCHMARKS.md).
    """
    environment = {
        # Run handlers on the replica's main event loop: saves a thread hop per request.
        # Safe because inference runs in the batcher's worker thread, never on the loop.
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(settings.drain_period_s),
        "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S": str(max(settings.drain_period_s, 0.1)),
    }
    if settings.ingress == "haproxy":
        environment["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
        environment["RAY_SERVE_HAPROXY_NBTHREAD"] = str(settings.haproxy_threads)
    return environment


def start(
    artifact_dirs: list[Path], settings: ServeSettings, stop_requested: threading.Event | None = None
) -> list[Manifest]:
    """Start Ray (embedded, local) and deploy one Serve app per artifact plus the root app.

    With `stop_requested`, SIGINT and SIGTERM set it from the moment Ray is up
    (ray.init installs handlers of its own, which would exit at once).
    """
    import ray
    from ray import serve

    from serve.builders import RootAppArgs, build_model_app, root_app

    manifests = verify_artifacts(artifact_dirs)
    os.environ.update(ray_serve_environment(settings))
    ray.init(
        _metrics_export_port=settings.metrics_port,
        include_dashboard=False,
        log_to_driver=False,
        _system_config={"metrics_report_interval_ms": settings.metrics_report_interval_ms},
    )
    if stop_requested is not None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop_requested.set())
    serve.start(http_options={"host": settings.host, "port": settings.port})
    for manifest, artifact_dir in zip(manifests, artifact_dirs):
        serve.run(build_model_app(Path(artifact_dir), settings), name=manifest.name,
                  route_prefix=f"/v2/models/{manifest.name}")
    serve.run(root_app(RootAppArgs(models=[m.name for m in manifests])), name=ROOT_APP, route_prefix="/")
    return manifests


def stop() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def serve_until_signalled(artifact_dirs: list[Path], settings: ServeSettings) -> None:
    """Run the server in the foreground until SIGINT or SIGTERM, then stop it cleanly."""
    stop_requested = threading.Event()
    manifests = start(artifact_dirs, settings, stop_requested)
    models = ", ".join(f"{m.name} v{m.version}" for m in manifests)
    print(f"optiserve: serving {models} on http://{settings.host}:{settings.port}/v2 "
          f"({settings.ingress} ingress); metrics on http://127.0.0.1:{settings.metrics_port}/metrics", flush=True)
    stop_requested.wait()
    print("optiserve: stopping", flush=True)
    stop()
