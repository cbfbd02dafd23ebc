"""A model repository: artifact directories found under the paths given, grouped by model and version.

Each model's newest version is served at `/v2/models/{name}` (and under its
own version path); every older version at `/v2/models/{name}/versions/{v}`.
Ray Serve routes by longest prefix, so each version is its own application
with its own replicas, batcher and cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from optimize.manifest import MANIFEST_FILE, ArtifactError, Manifest, load_verified

RESERVED_NAME = "optiserve"


@dataclass(frozen=True)
class ServedVersion:
    manifest: Manifest
    artifact_dir: Path
    all_versions: tuple[str, ...]  # of this model, newest first

    @property
    def newest(self) -> bool:
        return self.manifest.version == self.all_versions[0]

    @property
    def app_name(self) -> str:
        return self.manifest.name if self.newest else f"{self.manifest.name}-v{self.manifest.version}"

    @property
    def route_prefix(self) -> str:
        return route_prefix(self.manifest.name, self.manifest.version, self.newest)


def route_prefix(name: str, version: str, newest: bool) -> str:
    """Where a model version's application is routed: the newest at /v2/models/{name}, others under versions/."""
    base = f"/v2/models/{name}"
    return base if newest else f"{base}/versions/{version}"


def version_key(version: str) -> tuple:
    """Natural order: '10' after '9', '1.10' after '1.9'."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[._-]", version))


def find_artifacts(paths: list[Path]) -> list[Path]:
    """Each path is an artifact directory, or a repository holding them up to two levels down."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / MANIFEST_FILE).is_file():
            found.append(path)
            continue
        patterns = ("*/" + MANIFEST_FILE, "*/*/" + MANIFEST_FILE)
        nested = sorted(p.parent for pattern in patterns for p in path.glob(pattern))
        if not nested:
            raise ArtifactError(f"{path}: expected an artifact directory ({MANIFEST_FILE}) or a repository of them")
        found.extend(nested)
    return found


def load_repository(paths: list[Path]) -> list[ServedVersion]:
    """Verify every artifact (sha256) and plan one application per model version."""
    by_model: dict[str, dict[str, tuple[Manifest, Path]]] = {}
    for artifact_dir in find_artifacts(paths):
        manifest, _ = load_verified(artifact_dir)
        if manifest.name == RESERVED_NAME:
            raise ValueError(f"{artifact_dir}: the model name {RESERVED_NAME!r} is reserved for the server itself")
        versions = by_model.setdefault(manifest.name, {})
        if manifest.version in versions:
            raise ValueError(f"model {manifest.name!r} version {manifest.version!r}: expected one artifact, "
                             f"got {versions[manifest.version][1]} and {artifact_dir}")
        versions[manifest.version] = (manifest, artifact_dir.resolve())
    served = []
    for versions in by_model.values():
        order = tuple(sorted(versions, key=version_key, reverse=True))
        served.extend(ServedVersion(versions[v][0], versions[v][1], order) for v in order)
    return served
