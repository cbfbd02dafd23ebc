"""deploy/ray-cluster.yaml and deploy/kuberay/rayservice.yaml: valid, and consistent with the rest of deploy/."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from serve.on_ray.runner import ray_serve_environment
from serve.settings import ServeSettings
from tests.deploy.test_serve_config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def test_cluster_launcher_config_passes_rays_autoscaler_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(load("ray-cluster.yaml"), schema)


def test_cluster_launcher_has_head_cpu_and_gpu_workers_with_autoscaling_bounds():
    config = load("ray-cluster.yaml")
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu = [t for t in types.values() if t["resources"].get("GPU")]
    cpu = [t for name, t in types.items() if name != config["head_node_type"] and not t["resources"].get("GPU")]
    assert gpu and cpu
    for node_type in types.values():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= config["max_workers"]
    assert any(t["max_workers"] > t["min_workers"] for t in cpu + gpu), "no worker type can scale"


def test_cluster_nodes_start_ray_with_optiserve_environment_and_metrics_port():
    config = load("ray-cluster.yaml")
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = " ".join(commands)
        assert 'eval "$(optiserve ray-env)"' in start and "--metrics-export-port=8080" in start
    prometheus = load("prometheus/prometheus.yml")
    assert any("8080" in target for job in prometheus["scrape_configs"]
               for group in job.get("static_configs", []) for target in group["targets"])


def rayservice() -> dict:
    return load("kuberay/rayservice.yaml")


def pod_templates(service: dict) -> list[dict]:
    cluster = service["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [group["template"] for group in cluster["workerGroupSpecs"]]


def test_rayservice_serve_config_passes_rays_schema_and_equals_serve_config_yaml():
    service = rayservice()
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    inline = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.parse_obj(inline)
    assert inline == load_config(), "serveConfigV2 drifted from deploy/serve_config.yaml"


def test_rayservice_autoscales_and_is_scraped_by_prometheus():
    service = rayservice()
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert any(g["maxReplicas"] > g["minReplicas"] for g in cluster["workerGroupSpecs"])
    for template in pod_templates(service):
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8080"
    starts = [cluster["headGroupSpec"]["rayStartParams"]] + [g["rayStartParams"] for g in cluster["workerGroupSpecs"]]
    assert all(params["metrics-export-port"] == "8080" for params in starts)


def test_rayservice_pods_carry_the_environment_optiserve_ray_env_prints():
    expected = ray_serve_environment(ServeSettings(haproxy_threads=1))
    expected["RAY_SERVE_HAPROXY_BINARY_PATH"] = "/opt/venv/bin/optiserve-haproxy"  # the image's venv (Dockerfile)
    for template in pod_templates(rayservice()):
        (container,) = template["spec"]["containers"]
        assert {e["name"]: e["value"] for e in container["env"]} == expected
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True


def test_rayservice_gpu_group_asks_for_gpus():
    groups = rayservice()["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    gpu = [g for g in groups if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu and all(g["rayStartParams"].get("num-gpus") == "1" for g in gpu)
