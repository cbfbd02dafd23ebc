import pytest
from pydantic import ValidationError

from serve.settings import ServeSettings


def test_replica_concurrency_below_two_full_batches_is_refused():
    with pytest.raises(ValidationError, match=r"must be at least max_batch_size x 2 concurrent batches \(64\)"):
        ServeSettings(max_batch_size=32, max_ongoing_requests=40)
    assert ServeSettings(max_batch_size=32, max_ongoing_requests=64).replica_concurrency == 64


def test_default_replica_concurrency_admits_several_full_batches():
    settings = ServeSettings(max_batch_size=16)
    assert settings.replica_concurrency >= 2 * settings.max_batch_size


def test_settings_read_environment(monkeypatch):
    monkeypatch.setenv("OPTISERVE_MAX_BATCH_SIZE", "8")
    assert ServeSettings().max_batch_size == 8
