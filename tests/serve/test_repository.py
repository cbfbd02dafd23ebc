import shutil

import pytest

from optimize.manifest import ArtifactError, read_manifest, write_manifest
from serve.repository import find_artifacts, load_repository, version_key


def copy_as(artifact, target, version=None, name=None):
    shutil.copytree(artifact, target)
    manifest = read_manifest(target)
    changes = {k: v for k, v in {"version": version, "name": name}.items() if v is not None}
    write_manifest(manifest.model_copy(update=changes), target)
    return target


def test_versions_sort_naturally():
    assert sorted(["10", "9", "1.10", "1.9", "2"], key=version_key) == ["1.9", "1.10", "2", "9", "10"]


def test_a_repository_serves_newest_at_the_model_route_and_older_under_versions(digits_artifact, tmp_path):
    copy_as(digits_artifact, tmp_path / "digits" / "1", version="1")
    copy_as(digits_artifact, tmp_path / "digits" / "10", version="10")
    copy_as(digits_artifact, tmp_path / "digits" / "9", version="9")
    copy_as(digits_artifact, tmp_path / "other", name="other")
    served = {(s.manifest.name, s.manifest.version): s for s in load_repository([tmp_path])}
    assert served[("digits", "10")].route_prefix == "/v2/models/digits"
    assert served[("digits", "9")].route_prefix == "/v2/models/digits/versions/9"
    assert served[("digits", "9")].app_name == "digits-v9"
    assert served[("digits", "1")].all_versions == ("10", "9", "1")
    assert served[("other", "1")].route_prefix == "/v2/models/other"


def test_a_single_artifact_directory_is_its_own_repository(digits_artifact):
    (only,) = load_repository([digits_artifact])
    assert only.newest and only.app_name == "digits"


def test_the_same_version_twice_is_refused(digits_artifact, tmp_path):
    copy_as(digits_artifact, tmp_path / "a")
    copy_as(digits_artifact, tmp_path / "b")
    with pytest.raises(ValueError, match="version '1': expected one artifact"):
        load_repository([tmp_path])


def test_a_directory_without_artifacts_says_what_was_expected(tmp_path):
    with pytest.raises(ArtifactError, match="expected an artifact directory"):
        find_artifacts([tmp_path])


def test_the_reserved_name_is_refused(digits_artifact, tmp_path):
    copy_as(digits_artifact, tmp_path / "x", name="optiserve")
    with pytest.raises(ValueError, match="reserved"):
        load_repository([tmp_path / "x"])
