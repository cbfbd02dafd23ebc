"""The HAProxy configuration rewrite (serve/on_ray/ingress.py): pure text in, text out, checked by HAProxy itself."""

import contextlib
import dataclasses
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from serve.on_ray import ingress
from serve.on_ray.ingress import AdmissionPolicy, apps_with_replicas, config_path, rewrite_config, rewrite_in_place
from serve.http.ingress_stamp import RECEIVED_HEADER

POLICY = AdmissionPolicy(replica_maxconn=128, queue_per_replica=64, queue_timeout_ms=2500, reject_status=429)

# The shape of what Ray Serve 2.60 writes for the root app ("/") and one model ("/v2/models/digits"), trimmed.
RAY_CONFIG = """global
    log 127.0.0.1:514 local0 info
    maxconn 4096
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    option redispatch 1
    errorfile 502 {dir}/500.http
    errorfile 503 {dir}/500.http
    errorfile 504 {dir}/500.http
    balance leastconn
frontend prometheus
    bind :9101
    mode http
    http-request use-service prometheus-exporter if {{ path /metrics }}
    no log
frontend http_frontend
    bind 127.0.0.1:{port}
    acl routes path -i /-/routes
    http-request return status 200 content-type application/json string "{{}}" if routes
    acl is_http-digits path_beg /v2/models/digits/
    acl is_http-digits path /v2/models/digits
    acl is_http-optiserve path_beg /
    acl is_http-optiserve path /
    use_backend http-digits if is_http-digits
    use_backend http-optiserve if is_http-optiserve
    default_backend default_backend
backend default_backend
    http-request return status 404 content-type text/plain lf-string "Path '%[path]' not found."
backend http-digits
    http-reuse always
    timeout queue 5s
    option httpchk GET /-/healthz
    server SERVE_REPLICA_digits-model-digits-a 127.0.0.1:30001 check observe layer4 error-limit 3 on-error mark-down
    server SERVE_REPLICA_digits-model-digits-b 127.0.0.1:30002 check observe layer4 error-limit 3 on-error mark-down
    server SERVE_PROXY_ACTOR-fallback-x 127.0.0.1:8500 check backup
backend http-optiserve
    http-reuse always
    server SERVE_REPLICA_optiserve-ServerRoot-c 127.0.0.1:30000 check observe layer4 error-limit 3 on-error mark-down
"""

# What it writes while no application has a route yet (start-up).
RAY_CONFIG_NO_ROUTES = "\n".join(
    line for line in RAY_CONFIG.splitlines()
    if "is_http" not in line and "http-digits" not in line and "http-optiserve" not in line
    and "SERVE_" not in line and "http-reuse" not in line and "httpchk" not in line and "timeout queue" not in line
) + "\n"


def _assert_haproxy_accepts(path: Path) -> None:
    check = subprocess.run([ingress.real_haproxy(), "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def _section(config: str, header: str) -> list[str]:
    lines = config.splitlines()
    start = lines.index(header) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


@pytest.fixture
def rewritten(tmp_path):
    """(directory, rewritten configuration text): Ray's file rewritten where it lies."""
    (tmp_path / "haproxy.cfg").write_text(RAY_CONFIG.format(dir=tmp_path, port=8000))
    rewrite_in_place(tmp_path / "haproxy.cfg", POLICY)
    return tmp_path, (tmp_path / "haproxy.cfg").read_text()


def test_the_file_is_rewritten_once_even_if_the_command_runs_again_on_it(rewritten):
    directory, config = rewritten
    assert config.startswith(ingress.REWRITTEN_HEADER) and config.count("maxconn 128") == 2
    rewrite_in_place(directory / "haproxy.cfg", POLICY)
    assert (directory / "haproxy.cfg").read_text() == config


def test_the_config_file_is_found_in_haproxys_arguments():
    assert config_path(["-db", "-f", "/x/haproxy.cfg", "-sf", "123", "-x", "/x/admin.sock"]) == Path("/x/haproxy.cfg")


def test_model_replicas_get_the_connection_cap_and_the_root_app_does_not(rewritten):
    _, config = rewritten
    digits = _section(config, "backend http-digits")
    replicas = [line for line in digits if "SERVE_REPLICA_" in line]
    assert len(replicas) == 2 and all(line.endswith(" maxconn 128") for line in replicas)
    assert not any("maxconn" in line for line in digits if "fallback" in line)
    assert not any("maxconn" in line for line in _section(config, "backend http-optiserve"))


def test_a_model_backend_refuses_past_its_queue_with_json_and_retry_after(rewritten):
    _, config = rewritten
    digits = _section(config, "backend http-digits")
    assert [line.strip() for line in digits if "timeout queue" in line] == ["timeout queue 2500ms"]
    assert "    http-request set-var(txn.optiserve_queue_limit) nbsrv,mul(64)" in digits
    (refusal,) = [line for line in digits if "http-request return" in line]
    assert refusal.startswith("    http-request return status 429 content-type application/json hdr Retry-After 1 ")
    assert refusal.endswith(" if METH_POST { nbsrv ge 1 } { queue,sub(txn.optiserve_queue_limit) ge 0 }")
    quoted = refusal.split(" string ", 1)[1].rsplit(" if ", 1)[0]
    message = json.loads(json.loads(quoted))["error"]  # HAProxy's "..." with \" escapes reads as a JSON string
    assert "server busy" in message and "'digits'" in message


def test_haproxy_errors_are_json_pages_instead_of_rays_plain_500(rewritten):
    _, config = rewritten
    defaults = _section(config, "defaults")
    pages = {int(line.split()[1]): line.split()[2] for line in defaults if line.strip().startswith("errorfile")}
    assert sorted(pages) == [502, 503, 504] and "500.http" not in "".join(pages.values())
    for status, path in pages.items():
        head, body = open(path, "rb").read().split(b"\r\n\r\n", 1)
        assert head.startswith(f"HTTP/1.1 {status} ".encode())
        assert f"Content-Length: {len(body)}".encode() in head and b"Content-Type: application/json" in head
        assert (b"Retry-After: 1" in head) == (status == 503)
        assert json.loads(body)["error"]


def test_unknown_paths_still_get_404_once_routes_exist(rewritten):
    _, config = rewritten
    (line,) = _section(config, "backend default_backend")
    assert "return status 404" in line


def test_before_any_route_exists_the_ingress_answers_503_with_retry_after_instead_of_404(tmp_path):
    config = rewrite_config(RAY_CONFIG_NO_ROUTES.format(dir=tmp_path, port=8000), POLICY, {})
    (line,) = _section(config, "backend default_backend")
    assert "return status 503 content-type application/json hdr Retry-After 1" in line and "starting" in line


def test_haproxy_accepts_the_rewritten_configuration(rewritten):
    directory, _ = rewritten
    _assert_haproxy_accepts(directory / "haproxy.cfg")


def test_the_command_rewrites_then_runs_haproxy_in_its_place(tmp_path):
    (tmp_path / "haproxy.cfg").write_text(RAY_CONFIG.format(dir=tmp_path, port=8000))
    environment = {ingress.POLICY_VARIABLE: POLICY.to_environment(), "PATH": "/usr/bin:/bin"}
    check = subprocess.run([sys.executable, "-c", "from serve.on_ray.ingress import main; main()", "-c", "-f",
                            str(tmp_path / "haproxy.cfg")], env=environment, capture_output=True, text=True)
    assert check.returncode == 0 and "Configuration file is valid" in check.stdout + check.stderr, check.stderr
    assert "maxconn 128" in (tmp_path / "haproxy.cfg").read_text()


def test_the_command_runs_haproxy_at_the_policys_niceness(tmp_path):
    """HAProxy inherits the command's niceness across the exec. Raising it needs no privilege; a command that
    may not lower it runs HAProxy as it was and says so."""
    (tmp_path / "haproxy.cfg").write_text(RAY_CONFIG.format(dir=tmp_path, port=8000))
    started_at = os.getpriority(os.PRIO_PROCESS, 0)
    wanted = min(started_at + 2, 19)
    environment = {ingress.POLICY_VARIABLE: dataclasses.replace(POLICY, niceness=wanted).to_environment(),
                   "PATH": "/usr/bin:/bin"}
    # `sh -c 'ps ...'` stands in for HAProxy (the exec'd binary) and reports the niceness it runs at
    shim = ("import os, serve.on_ray.ingress as i; i.real_haproxy = lambda: '/bin/sh'; "
            "i.main(['-c', 'ps -o ni= -p $$', '-f', os.environ['CONFIG']])")
    check = subprocess.run([sys.executable, "-c", shim], env={**environment, "CONFIG": str(tmp_path / "haproxy.cfg")},
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert int(check.stdout.split()[-1]) == wanted


def test_a_niceness_the_command_may_not_set_leaves_haproxy_as_it_was(monkeypatch, capsys):
    def refused(*_args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refused)
    ingress.set_niceness(-20)
    assert f"HAProxy stays at niceness {os.getpriority(os.PRIO_PROCESS, 0)}, not -20" in capsys.readouterr().err


def test_the_command_fails_loudly_without_its_policy(tmp_path):
    (tmp_path / "haproxy.cfg").write_text(RAY_CONFIG.format(dir=tmp_path, port=8000))
    check = subprocess.run([sys.executable, "-c", "from serve.on_ray.ingress import main; main()", "-f",
                            str(tmp_path / "haproxy.cfg")], env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                           text=True)
    assert check.returncode == 2 and f"{ingress.POLICY_VARIABLE} is not set" in check.stderr


def test_the_policy_round_trips_through_the_environment():
    assert AdmissionPolicy.from_environment({ingress.POLICY_VARIABLE: POLICY.to_environment()}) == POLICY
    waiting = AdmissionPolicy(1, 2, 3, 503, listen_after_apps=("digits", "minilm-v2"), quiet_requests=True,
                              replica_http=True, niceness=-5)
    assert AdmissionPolicy.from_environment({ingress.POLICY_VARIABLE: waiting.to_environment()}) == waiting


@pytest.mark.parametrize("text, expected", [
    ('{"replica_maxconn": 0, "queue_per_replica": 1, "queue_timeout_ms": 1, "reject_status": 503}',
     "replica_maxconn must be a positive integer"),
    ('{"replica_maxconn": 1, "queue_per_replica": 1, "queue_timeout_ms": 1, "reject_status": 500}',
     "reject_status must be 429 or 503"),
    ('{"replica_maxconn": 1}', "expected a JSON object with the fields"),
    ("maxconn=1", "expected a JSON object with the fields"),
    ('{"replica_maxconn": 1, "queue_per_replica": 1, "queue_timeout_ms": 1, "reject_status": 503, '
     '"listen_after_apps": [3]}', "listen_after_apps must be application names"),
    ('{"replica_maxconn": 1, "queue_per_replica": 1, "queue_timeout_ms": 1, "reject_status": 503, '
     '"listen_after_apps": "digits"}', "listen_after_apps must be application names"),
    ('{"replica_maxconn": true, "queue_per_replica": 1, "queue_timeout_ms": 1, "reject_status": 503}',
     "replica_maxconn must be a positive integer"),
    ('{"replica_maxconn": 1, "queue_per_replica": 1, "queue_timeout_ms": 1, "reject_status": 503, '
     '"quiet_requests": "yes"}', "quiet_requests must be true or false"),
    ('{"replica_maxconn": 1, "queue_per_replica": 1, "queue_timeout_ms": 1, "reject_status": 503, '
     '"replica_http": 1}', "replica_http must be true or false"),
    ('{"replica_maxconn": 1, "queue_per_replica": 1, "queue_timeout_ms": 1, "reject_status": 503, '
     '"niceness": 20}', "niceness must be an integer from -20 to 19"),
    ('{"replica_maxconn": 1, "queue_per_replica": 1, "queue_timeout_ms": 1, "reject_status": 503, '
     '"niceness": "0"}', "niceness must be an integer from -20 to 19"),
])
def test_a_bad_policy_says_what_was_expected(text, expected):
    with pytest.raises(ValueError, match=expected):
        AdmissionPolicy.from_environment({ingress.POLICY_VARIABLE: text})


def test_arguments_without_a_config_file_are_refused():
    with pytest.raises(ValueError, match="expected HAProxy's arguments with '-f <config file>'"):
        config_path(["-db", "-f"])


def _disables_frontend(config: str) -> bool:
    return any(line.strip().startswith("disabled") for line in _section(config, "frontend http_frontend"))


def _frontend_disabled(directory) -> bool:
    config = (directory / "haproxy.cfg").read_text()
    assert "    bind 127.0.0.1:8000" in _section(config, "frontend http_frontend")
    return _disables_frontend(config)


def test_apps_with_replicas_reads_the_backends():
    assert apps_with_replicas(RAY_CONFIG) == {"digits", "optiserve"}
    assert apps_with_replicas(RAY_CONFIG_NO_ROUTES) == set()


def test_the_port_stays_closed_until_every_named_app_has_a_replica_then_stays_open(tmp_path):
    waiting = AdmissionPolicy(128, 64, 2500, 503, listen_after_apps=("digits", "minilm"))
    source = tmp_path / "haproxy.cfg"
    source.write_text(RAY_CONFIG.format(dir=tmp_path, port=8000))
    rewrite_in_place(source, waiting)
    assert _frontend_disabled(tmp_path)  # minilm has no replica yet

    with_minilm = RAY_CONFIG.replace("\nbackend http-optiserve", "\nbackend http-minilm\n"
                                     "    server SERVE_REPLICA_minilm-x 127.0.0.1:30009 check\nbackend http-optiserve")
    source.write_text(with_minilm.format(dir=tmp_path, port=8000))
    rewrite_in_place(source, waiting)
    assert not _frontend_disabled(tmp_path)

    source.write_text(RAY_CONFIG.format(dir=tmp_path, port=8000))  # minilm's replicas all gone: stays open
    rewrite_in_place(source, waiting)
    assert not _frontend_disabled(tmp_path)


def test_haproxy_accepts_the_closed_frontend(tmp_path):
    waiting = AdmissionPolicy(128, 64, 2500, 503, listen_after_apps=("minilm",))
    (tmp_path / "haproxy.cfg").write_text(RAY_CONFIG.format(dir=tmp_path, port=8000))
    rewrite_in_place(tmp_path / "haproxy.cfg", waiting)
    assert _frontend_disabled(tmp_path)
    _assert_haproxy_accepts(tmp_path / "haproxy.cfg")


def _rays_own_config(directory: Path, digits_servers: int) -> Path:
    """What Ray Serve 2.60 itself writes for the root app and a digits model (its private config generator:
    this test exists to catch a Ray upgrade that changes the lines the rewrite relies on)."""
    from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig

    def backend(app: str, prefix: str, servers: int, port: int) -> BackendConfig:
        return BackendConfig(name=f"http-{app}", path_prefix=prefix, app_name=app, servers=[
            ServerConfig(name=f"SERVE_REPLICA_{app}-{i}", host="127.0.0.1", port=port + i) for i in range(servers)])

    config = HAProxyConfig(socket_path=str(directory / "admin.sock"), server_state_base=str(directory),
                           server_state_file=str(directory / "state"))
    backends = {"optiserve": backend("optiserve", "/", 1, 30000),
                "digits": backend("digits", "/v2/models/digits", digits_servers, 30001)}
    HAProxyApi(cfg=config, backend_configs=backends,
               config_file_path=str(directory / "haproxy.cfg"))._generate_config_file_internal()
    return directory / "haproxy.cfg"


def test_the_rewrite_finds_what_it_needs_in_the_configuration_ray_writes(tmp_path):
    path = _rays_own_config(tmp_path, digits_servers=2)
    assert apps_with_replicas(path.read_text()) == {"digits", "optiserve"}
    rewrite_in_place(path, AdmissionPolicy(128, 64, 2500, 503, listen_after_apps=("digits",), quiet_requests=True))
    config = path.read_text()
    assert any("set-log-level silent" in line for line in _section(config, "frontend http_frontend"))
    digits = _section(config, "backend http-digits")
    assert sum(line.endswith(" maxconn 128") for line in digits) == 2
    assert any("nbsrv,mul(64)" in line for line in digits) and "    timeout queue 2500ms" in digits
    assert not any("maxconn" in line for line in _section(config, "backend http-optiserve"))
    assert "500.http" not in config and "optiserve-503.http" in config
    assert not _disables_frontend(config)
    _assert_haproxy_accepts(path)


def test_rays_configuration_without_a_digits_replica_keeps_the_port_closed(tmp_path):
    path = _rays_own_config(tmp_path, digits_servers=0)
    rewrite_in_place(path, AdmissionPolicy(128, 64, 2500, 503, listen_after_apps=("digits",)))
    assert _disables_frontend(path.read_text())


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _HeaderRecorder(http.server.BaseHTTPRequestHandler):
    """A model replica stand-in: healthy (GET), records the ingress's stamp of each POST."""

    stamps: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        _HeaderRecorder.stamps.append(self.headers.get(RECEIVED_HEADER))
        self._answer()

    def _answer(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _recording_server(handler) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@contextlib.contextmanager
def _ray_haproxy(directory: Path, policy: AdmissionPolicy, log_port: int, digits_port: int | None = None
                 ) -> Iterator[str]:
    """Real HAProxy on the configuration Ray writes, rewritten, with its digits replica a _HeaderRecorder (or
    whatever listens on `digits_port`) and its log sent to `log_port` here; yields the digits inference URL."""
    backend = _recording_server(_HeaderRecorder)
    path = _rays_own_config(directory, digits_servers=1)
    port = _free_port()
    config = path.read_text()
    for ray_writes, here in [("127.0.0.1:30001", f"127.0.0.1:{digits_port or backend.server_address[1]}"),
                             ("log 127.0.0.1:514", f"log 127.0.0.1:{log_port}"),
                             ("bind 127.0.0.1:8000", f"bind 127.0.0.1:{port}"),
                             ("bind :9101", f"bind 127.0.0.1:{_free_port()}"),
                             ("bind *:8404", f"bind 127.0.0.1:{_free_port()}")]:
        assert ray_writes in config, f"Ray's configuration no longer has {ray_writes!r}"
        config = config.replace(ray_writes, here)
    path.write_text(config)
    rewrite_in_place(path, policy)
    haproxy = subprocess.Popen([ingress.real_haproxy(), "-db", "-f", str(path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}/v2/models/digits/infer"
    finally:
        haproxy.terminate()
        haproxy.wait(timeout=10)
        backend.shutdown()
        backend.server_close()


def _send_until_answered(request: urllib.request.Request) -> None:
    """Send until HAProxy listens (and has found its backend up) and answers 2xx."""
    for _ in range(100):
        try:
            urllib.request.urlopen(request, timeout=5).read()
            return
        except urllib.error.URLError:
            time.sleep(0.05)
    raise AssertionError(f"HAProxy never answered {request.full_url} with 2xx")


def _log_lines_for_one_request(directory: Path, policy: AdmissionPolicy) -> list[bytes]:
    """The lines HAProxy logs for one inference request, its log sent to a UDP socket here."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as log:
        log.bind(("127.0.0.1", 0))
        log.settimeout(0.5)
        with _ray_haproxy(directory, policy, log.getsockname()[1]) as url:
            _send_until_answered(urllib.request.Request(url, data=b"{}"))
            lines = []
            while True:
                try:
                    lines.append(log.recv(65536))
                except TimeoutError:
                    return [line for line in lines if b"/v2/models/digits/infer" in line]


def test_quiet_requests_leave_no_log_line_per_request_and_the_default_logs_one(tmp_path):
    (tmp_path / "quiet").mkdir()
    (tmp_path / "logged").mkdir()
    quiet = AdmissionPolicy(128, 64, 2500, 503, quiet_requests=True)
    assert _log_lines_for_one_request(tmp_path / "quiet", quiet) == []
    assert len(_log_lines_for_one_request(tmp_path / "logged", POLICY)) == 1


def test_haproxy_stamps_each_request_with_when_it_arrived_replacing_the_clients(tmp_path):
    forged = {RECEIVED_HEADER: "1"}  # a client claiming its request arrived in 1970
    with _ray_haproxy(tmp_path, POLICY, _free_port(socket.SOCK_DGRAM)) as url:
        before_ms = time.time() * 1000
        _send_until_answered(urllib.request.Request(url, data=b"{}", headers=forged))
        after_ms = time.time() * 1000
    assert _HeaderRecorder.stamps, "no request reached the backend through HAProxy"
    stamp = _HeaderRecorder.stamps[-1]
    assert stamp is not None and before_ms - 1 <= int(stamp) <= after_ms + 1, (stamp, before_ms, after_ms)


class _PathRecorder(http.server.BaseHTTPRequestHandler):
    """Answers 200 to anything and records (its port, method, path)."""

    seen: list[tuple[int, str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self._answer()

    def _answer(self) -> None:
        _PathRecorder.seen.append((self.server.server_address[1], self.command, self.path))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_with_replica_http_requests_go_to_the_replicas_own_port_and_health_checks_to_rays(tmp_path, monkeypatch):
    rays, own = sorted((_recording_server(_PathRecorder) for _ in range(2)), key=lambda s: s.server_address[1])
    ray_port, own_port = rays.server_address[1], own.server_address[1]
    # the replicas' own servers listen one Ray port range above Ray's: a range of own - ray ports
    monkeypatch.setenv(ingress.RAY_PORT_RANGE[0], "1")
    monkeypatch.setenv(ingress.RAY_PORT_RANGE[1], str(own_port - ray_port))
    policy = AdmissionPolicy(128, 64, 2500, 503, replica_http=True)
    with _ray_haproxy(tmp_path, policy, _free_port(socket.SOCK_DGRAM), digits_port=ray_port) as url:
        config = (tmp_path / "haproxy.cfg").read_text()
        line = next(line for line in config.splitlines() if "SERVE_REPLICA_digits" in line)
        assert f"127.0.0.1:{own_port} " in line and line.endswith(f" port {ray_port} maxconn 128"), line
        for _ in range(3):
            _send_until_answered(urllib.request.Request(url, data=b"{}"))
        deadline = time.monotonic() + 5
        while not any(port == ray_port for port, _, _ in _PathRecorder.seen) and time.monotonic() < deadline:
            time.sleep(0.05)
    posts = {port for port, method, _ in _PathRecorder.seen if method == "POST"}
    checks = {(port, path) for port, method, path in _PathRecorder.seen if method == "GET"}
    assert posts == {own_port}, _PathRecorder.seen
    assert (ray_port, "/-/healthz") in checks and not any(port == own_port for port, _ in checks), _PathRecorder.seen
    rays.shutdown()
    own.shutdown()


def test_without_replica_http_the_replicas_keep_rays_ports(rewritten):
    _, config = rewritten
    assert "127.0.0.1:30001 check" in config and " port 30001" not in config
