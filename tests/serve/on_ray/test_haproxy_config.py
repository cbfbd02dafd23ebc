"""Reading Ray's HAProxy configuration (serve/on_ray/haproxy_config.py): a configuration without a part the
rewrite edits is refused, naming the part and the feature it would leave off, instead of served with that
feature silently gone. (tests/serve/on_ray/test_ray_contract.py checks that every configuration Ray writes has
them all.)"""

import subprocess
import sys

import pytest

from serve.on_ray import ingress
from serve.on_ray.haproxy_config import model_backends, moved_parts
from serve.on_ray.ingress import AdmissionPolicy, rewrite_config
from tests.serve.on_ray.test_ingress import POLICY, RAY_CONFIG, RAY_CONFIG_NO_ROUTES

CONFIG = RAY_CONFIG.format(dir="/ray", port=8000)


def test_the_configurations_ray_writes_have_every_part():
    assert moved_parts(CONFIG) == []
    assert moved_parts(RAY_CONFIG_NO_ROUTES.format(dir="/ray", port=8000)) == []
    assert model_backends(CONFIG.splitlines()) == {"http-digits"}


@pytest.mark.parametrize("ray_writes, instead, named, feature", [
    ("frontend http_frontend", "frontend ingress", "no 'frontend http_frontend' section", "ingress stamps"),
    ("\nbackend default_backend", "\nbackend fallthrough", "no 'backend default_backend' section", "503 + Retry-After"),
    ("http-request return status 404", "http-request deny deny_status 404", "has no 404 rule", "503 + Retry-After"),
    ("\ndefaults\n", "\ncommon\n", "no 'defaults' section", "JSON error pages"),
    ("acl is_http-digits path_beg", "acl route_http-digits path_beg", "'use_backend http-digits if is_http-digits' "
     "routes by no path_beg ACL", "admission control"),
    ("server SERVE_REPLICA_digits-model-digits-a", "server REPLICA_digits-a", "'server REPLICA_digits-a",
     "connection cap"),
    ("127.0.0.1:30002 check", "[::1]30002 check", "SERVE_REPLICA_digits-model-digits-b [::1]30002", "replica_http"),
])
def test_a_moved_part_is_named_with_the_feature_it_would_leave_off(ray_writes, instead, named, feature):
    moved = CONFIG.replace(ray_writes, instead, 1)
    (problem,) = moved_parts(moved)
    assert named in problem and feature in problem, problem
    with pytest.raises(ValueError, match="Refusing to run HAProxy with those features off") as refused:
        rewrite_config(moved, POLICY, {})
    assert named in str(refused.value) and "OPTISERVE_INGRESS_ADMISSION=false" in str(refused.value)


def test_a_model_backend_not_named_http_app_is_refused():
    moved = CONFIG.replace("http-digits", "h1-digits")
    assert any("model backend 'h1-digits'" in problem and "listen_after_apps" in problem
               for problem in moved_parts(moved)), moved_parts(moved)


def test_the_shim_refuses_a_moved_configuration_before_haproxy_runs(tmp_path):
    """Ray shows the shim's stderr when HAProxy exits at start (test_ray_contract.py checks it does)."""
    (tmp_path / "haproxy.cfg").write_text(CONFIG.replace("frontend http_frontend", "frontend ingress"))
    environment = {ingress.POLICY_VARIABLE: AdmissionPolicy(128, 64, 2500, 503).to_environment(), "PATH": "/usr/bin"}
    run = subprocess.run([sys.executable, "-c", "from serve.on_ray.ingress import main; main()", "-c", "-f",
                          str(tmp_path / "haproxy.cfg")], env=environment, capture_output=True, text=True)
    assert run.returncode == 2 and "no 'frontend http_frontend' section" in run.stderr, run.stderr
    assert not (tmp_path / "haproxy.cfg").read_text().startswith(ingress.REWRITTEN_HEADER)
