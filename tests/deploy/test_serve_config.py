"""deploy/serve_config.yaml: valid for Ray's own schema and consistent with optiserve's settings."""

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve.on_ray.builders import ModelAppArgs, RootAppArgs, deployment_name
from serve.settings import CONCURRENT_BATCHES, RuntimeConfig

CONFIG_PATH = Path(__file__).resolve().parents[2] / "deploy" / "serve_config.yaml"


def load_config(path: Path = CONFIG_PATH) -> dict:
    return yaml.safe_load(path.read_text())


def model_apps(config: dict) -> list[dict]:
    return [app for app in config["applications"] if app["import_path"] == "serve.on_ray.builders:model_app"]


def test_serve_config_passes_rays_own_schema():
    schema = ServeDeploySchema.parse_obj(load_config())
    assert {app.name for app in schema.applications} >= {"digits", "optiserve"}


def test_every_model_app_has_valid_args_user_config_and_autoscaling():
    config = load_config()
    for app in model_apps(config):
        args = ModelAppArgs.model_validate(app["args"])
        (deployment,) = app["deployments"]
        assert deployment["name"] == deployment_name(app["name"]), "deployment options must name the real deployment"
        assert app["route_prefix"] == f"/v2/models/{app['name']}"
        runtime = RuntimeConfig.model_validate(deployment["user_config"])
        assert deployment["max_ongoing_requests"] >= runtime.max_batch_size * CONCURRENT_BATCHES, (
            "Ray Serve's max_ongoing_requests below max_batch_size x concurrent batches keeps batches small"
        )
        scaling = deployment["autoscaling_config"]
        assert 1 <= scaling["min_replicas"] < scaling["max_replicas"]
        assert scaling["target_ongoing_requests"] <= deployment["max_ongoing_requests"]
        # the replicas' own HTTP servers (on by default) carry the traffic Ray's default policy would not see
        assert scaling["policy"]["policy_function"] == "serve.on_ray.autoscaling:ongoing_requests_policy"
        assert args.artifact_dir.is_absolute()


def test_root_app_lists_exactly_the_model_apps():
    config = load_config()
    (root,) = [app for app in config["applications"] if app["import_path"] == "serve.on_ray.builders:root_app"]
    assert root["route_prefix"] == "/"
    assert RootAppArgs.model_validate(root["args"]).models == [app["name"] for app in model_apps(config)]


@pytest.mark.parametrize("bad", [{"max_batch_size": 0}, {"max_wait_ms": -1}, {"surprise": 1}])
def test_bad_user_config_is_refused(bad):
    with pytest.raises(ValueError):
        RuntimeConfig.model_validate({**RuntimeConfig().model_dump(), **bad})
