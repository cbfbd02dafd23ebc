"""`optiserve serve`: serve artifact directories over HTTP."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# CLI flag -> ServeSettings field; unset flags fall back to OPTISERVE_* env vars, then defaults.
_FLAGS = {
    "--host": ("host", str), "--port": ("port", int), "--metrics-port": ("metrics_port", int),
    "--ingress": ("ingress", str), "--replicas": ("replicas", int),
    "--max-batch-size": ("max_batch_size", int), "--max-wait-ms": ("max_wait_ms", float),
    "--cache-max-bytes": ("cache_max_bytes", int), "--max-queue-size": ("max_queue_size", int),
    "--request-timeout-ms": ("request_timeout_ms", float), "--reject-status": ("reject_status", int),
    "--intra-op-threads": ("intra_op_threads", int), "--replica-cpus": ("replica_cpus", float),
    "--max-queued-requests": ("max_queued_requests", int), "--max-ongoing-requests": ("max_ongoing_requests", int),
    "--inline-call-us": ("inline_call_us", float), "--ingress-queue-per-replica": ("ingress_queue_per_replica", int),
}
SETTINGS_FLAGS = {field: flag for flag, (field, _) in _FLAGS.items()}  # for the settings reference


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from serve.settings import ServeSettings

    parser.add_argument("artifacts", nargs="+", type=Path, help="artifact directories (model.onnx + manifest.json)")
    for flag, (field, kind) in _FLAGS.items():
        info = ServeSettings.model_fields[field]
        parser.add_argument(flag, dest=field, type=kind, default=None,
                            help=f"{info.description} (default {info.default})")


def main(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from optimize.manifest import ArtifactError
    from serve.on_ray.runner import serve_until_signalled
    from serve.settings import ServeSettings

    overrides = {field: getattr(args, field) for field, _ in _FLAGS.values() if getattr(args, field) is not None}
    try:
        settings = ServeSettings(**overrides)
        serve_until_signalled(args.artifacts, settings)
    except ValidationError as error:  # one line per wrong setting; values are not echoed (one may be a secret)
        for problem in error.errors():
            field = ".".join(map(str, problem["loc"])) or "settings"
            print(f"optiserve serve: {field}: {problem['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    except (ArtifactError, ValueError) as error:
        print(f"optiserve serve: {error}", file=sys.stderr)
        return 2
    return 0
