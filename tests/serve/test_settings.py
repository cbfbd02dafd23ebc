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


def test_rays_replica_logger_is_quiet_unless_requests_are_logged(monkeypatch):
    monkeypatch.delenv("OPTISERVE_ACCESS_LOG", raising=False)
    monkeypatch.delenv("OPTISERVE_REPLICA_LOG_LEVEL", raising=False)
    assert ServeSettings().replica_ray_log_level == "WARNING"
    assert ServeSettings(access_log=True).replica_ray_log_level == "INFO"
    assert ServeSettings(replica_log_level="DEBUG").replica_ray_log_level == "DEBUG"
    assert ServeSettings(replica_log_level="warning").replica_ray_log_level == "WARNING"  # as logging spells it too


def test_an_access_log_below_the_replica_log_level_is_refused():
    with pytest.raises(ValidationError, match="access_log writes at INFO: expected replica_log_level DEBUG or INFO"):
        ServeSettings(access_log=True, replica_log_level="WARNING")


def test_the_metrics_port_must_differ_from_the_http_port():
    with pytest.raises(ValidationError, match="metrics_port: expected a port other than the HTTP port, got 9000"):
        ServeSettings(port=9000, metrics_port=9000)
    assert ServeSettings(port=9000, metrics_port=9001).metrics_port == 9001


def test_a_queue_smaller_than_a_batch_is_refused_with_the_settings_not_when_a_model_starts():
    with pytest.raises(ValueError, match=r"max_queue_size must be at least max_batch_size \(32\), got 8"):
        ServeSettings(max_queue_size=8)
