import json
import shutil

import pytest

from optimize.manifest import ArtifactError, load_verified, read_manifest, write_manifest


def test_manifest_round_trips_through_json(digits_artifact, tmp_path):
    manifest = read_manifest(digits_artifact)
    write_manifest(manifest, tmp_path)
    assert read_manifest(tmp_path) == manifest


def test_verified_load_accepts_the_untouched_artifact(digits_artifact):
    manifest, model_path = load_verified(digits_artifact)
    assert model_path.name == manifest.model_file


def test_verified_load_refuses_a_model_whose_bytes_changed(digits_artifact, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(digits_artifact, copy)
    with open(copy / "model.onnx", "ab") as model:
        model.write(b"\0")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load_verified(copy)


def test_missing_manifest_says_what_was_expected(tmp_path):
    with pytest.raises(ArtifactError, match="expected an artifact directory with manifest.json"):
        read_manifest(tmp_path)


def test_unknown_format_version_is_refused(digits_artifact, tmp_path):
    document = json.loads((digits_artifact / "manifest.json").read_text())
    document["format_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="expected format_version 1, got 99"):
        read_manifest(tmp_path)


def test_manifest_rejects_unknown_fields(digits_artifact, tmp_path):
    document = json.loads((digits_artifact / "manifest.json").read_text())
    document["surprise"] = 1
    (tmp_path / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="not a valid manifest"):
        read_manifest(tmp_path)
