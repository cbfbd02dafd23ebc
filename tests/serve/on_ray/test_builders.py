"""How each model's Ray Serve deployment is configured."""

from serve.on_ray.builders import build_model_app
from serve.settings import ServeSettings


def test_model_replicas_log_rays_lines_at_warning_unless_requests_are_logged(digits_artifact, monkeypatch):
    for variable in ("OPTISERVE_ACCESS_LOG", "OPTISERVE_REPLICA_LOG_LEVEL"):
        monkeypatch.delenv(variable, raising=False)
    quiet = build_model_app(digits_artifact, ServeSettings())._bound_deployment.logging_config
    assert (quiet["log_level"], quiet["enable_access_log"]) == ("WARNING", False)
    logged = build_model_app(digits_artifact, ServeSettings(access_log=True))._bound_deployment.logging_config
    assert (logged["log_level"], logged["enable_access_log"]) == ("INFO", True)


def test_optiserves_own_replica_lines_stay_at_info_under_a_quiet_ray_logger():
    import logging

    from serve.runtimes import model

    assert model.logger.name.startswith("ray.serve.") and model.logger.getEffectiveLevel() == logging.INFO
