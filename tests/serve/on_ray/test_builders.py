"""How each model's Ray Serve deployment is configured."""

from optimize.manifest import load_verified
from serve.on_ray.builders import model_deployment_options
from serve.settings import ServeSettings


def test_model_replicas_log_rays_lines_at_warning_unless_requests_are_logged(digits_artifact, monkeypatch):
    for variable in ("OPTISERVE_ACCESS_LOG", "OPTISERVE_REPLICA_LOG_LEVEL"):
        monkeypatch.delenv(variable, raising=False)
    manifest = load_verified(digits_artifact)[0]
    quiet = model_deployment_options(manifest, ServeSettings())["logging_config"]
    assert (quiet["log_level"], quiet["enable_access_log"]) == ("WARNING", False)
    logged = model_deployment_options(manifest, ServeSettings(access_log=True))["logging_config"]
    assert (logged["log_level"], logged["enable_access_log"]) == ("INFO", True)


def test_optiserves_own_replica_lines_stay_at_info_under_a_quiet_ray_logger():
    import logging

    from serve.runtimes import model

    assert model.logger.name.startswith("ray.serve.") and model.logger.getEffectiveLevel() == logging.INFO
