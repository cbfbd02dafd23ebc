"""Start and stop the embedded server: a local Ray instance with Serve on it."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path
from typing import Callable

from serve.on_ray import contract, ingress
from serve.on_ray.contract import (
    CONTROL_LOOP, FALLBACK_GRPC_PORT, FALLBACK_HTTP_PORT, HAPROXY, HAPROXY_BINARY, HAPROXY_METRICS, HAPROXY_RETRY_ON,
    HAPROXY_THREADS, INIT_ARGUMENTS, METRICS_INTERVAL, PROCESS_NAME, PROXY_DRAIN, REFUSE, REPLICA_DRAIN,
    REPLICA_MAX_PORT, REPLICA_MIN_PORT, ROUTES, STARTUP_TIMEOUT, USER_CODE_THREAD,
)
from serve.repository import RESERVED_NAME, ServedVersion, load_repository
from serve.settings import ServeSettings


def ray_serve_environment(settings: ServeSettings, apps: tuple[str, ...] = ()) -> dict[str, str]:
    """Ray Serve knobs that only exist as environment variables, read by the processes Ray starts.

    `apps`: the model applications this embedded server will run; the HAProxy ingress keeps its port
    closed until each has a replica (serve/on_ray/ingress.py). A cluster node passes none.

    Each was measured with benchmarks/serve_bench.py (docs/BENCHMARKS.md).
    """
    environment = {
        # Run handlers on the replica's main event loop: saves a thread hop per request.
        # Safe because inference runs in the batcher's worker thread, never on the loop.
        USER_CODE_THREAD.name: "0",
        REPLICA_DRAIN.name: str(settings.drain_period_s),
        PROXY_DRAIN.name: str(max(settings.drain_period_s, 0.1)),
        CONTROL_LOOP.name: str(settings.control_loop_interval_s),
    }
    if settings.ingress == "haproxy":
        environment[HAPROXY.name] = "1"
        environment[HAPROXY_THREADS.name] = str(settings.haproxy_threads)
        environment[HAPROXY_METRICS.name] = "1" if settings.ingress_request_metrics else "0"
        environment[HAPROXY_RETRY_ON.name] = (
            "conn-failure empty-response junk-response" if settings.retry_lost_requests else "conn-failure"
        )
        if settings.ingress_admission:
            environment[HAPROXY_BINARY.name] = ingress.shim_path()
            environment[ingress.POLICY_VARIABLE] = ingress.AdmissionPolicy(
                replica_maxconn=settings.replica_concurrency,
                queue_per_replica=settings.ingress_queue_per_replica,
                queue_timeout_ms=settings.ingress_queue_timeout_ms,
                reject_status=settings.reject_status,
                listen_after_apps=tuple(apps),
                # Ray's HAProxy metrics are parsed from the per-request lines; access_log asks for them too
                quiet_requests=not (settings.ingress_request_metrics or settings.access_log),
                replica_http=settings.replica_http,
                niceness=settings.ingress_niceness,
            ).to_environment()
    return environment


def start(
    paths: list[Path], settings: ServeSettings, stop_requested: threading.Event | None = None
) -> list[ServedVersion]:
    """Start Ray (embedded, local) and deploy one Serve app per model version plus the root app.

    `paths` are artifact directories or repositories of them; every artifact is
    verified (sha256) before Ray starts, so a bad one fails fast.

    With `stop_requested`, SIGINT and SIGTERM set it from the moment Ray is up
    (ray.init installs handlers of its own, which would exit at once).
    """
    import ray
    from ray import serve

    from serve.on_ray.builders import RootAppArgs, build_model_app, root_app

    served = load_repository(paths)
    _check_port_free(settings.host, settings.port)
    environment = ray_serve_environment(settings, tuple(version.app_name for version in served))
    # only this server's HAProxy can stamp its requests (serve/http/ingress_stamp.py)
    ingress.add_fresh_token(environment)
    shim = environment.get(HAPROXY_BINARY.name)
    if shim is not None and not os.access(shim, os.X_OK):
        raise ValueError(f"ingress admission needs the {ingress.SHIM_COMMAND} command at {shim}: "
                         "reinstall optiserve (pip install -e .), or set OPTISERVE_INGRESS_ADMISSION=false")
    if REPLICA_MIN_PORT.name not in os.environ:
        environment.update(own_ports_environment(free_port_block(settings.port)))
    check_ray_takes_up(environment, {**os.environ, **environment}, ray.__version__)
    os.environ.update(environment)
    init_with_retry(lambda: ray.init(**ray_init_arguments(settings)), _stop_failed_ray_node)
    if stop_requested is not None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop_requested.set())
    serve.start(http_options={"host": settings.host, "port": settings.port})
    settings = _fit_replicas_to_cpus(settings, replicas=len(served) * settings.replicas)
    models = sorted({version.manifest.name for version in served})
    apps = [version.app_name for version in served]
    # The root app goes first: once it has its route, requests for a model that is still starting get its
    # 503 + Retry-After instead of the ingress's 404 for an unknown path.
    serve.run(root_app(RootAppArgs(models=models, apps=apps, routes_url=_routes_url(settings))),
              name=RESERVED_NAME, route_prefix="/")
    for version in served:
        serve.run(build_model_app(version.artifact_dir, settings, version.all_versions, version.app_name,
                                  verified=version.manifest),
                  name=version.app_name, route_prefix=version.route_prefix)
    return served


def ray_init_arguments(settings: ServeSettings) -> dict:
    """ray.init's arguments for the embedded server, two of them private (serve/on_ray/contract.py)."""
    metrics_port, system_config = INIT_ARGUMENTS.value
    return {
        "address": "local",  # always our own instance, never a `ray start` cluster that happens to run here
        metrics_port: settings.metrics_port,
        "include_dashboard": False,
        "log_to_driver": False,
        system_config: {METRICS_INTERVAL.value: settings.metrics_report_interval_ms},
    }


def check_ray_takes_up(environment: dict[str, str], environ: dict[str, str], ray_version: str) -> None:
    """Refuse to start where Ray, started with `environ`, would ignore a variable of `environment` that a feature
    needs; say which tuning it ignores. Ray reads them in each process it starts, where a miss would be silent."""
    refused = []
    for variable, why in contract.ignored_variables(environment, environ):
        message = f"Ray {ray_version} ignores {variable.name} ({why}), so {variable.feature} is off"
        if variable.if_ignored == REFUSE:
            refused.append(message)
        else:
            print(f"optiserve: warning: {message} (serve/on_ray/contract.py)", flush=True)
    if refused:
        raise RuntimeError("; ".join(refused) + f". optiserve is checked against Ray {contract.RAY_VERSION} "
                           "(pyproject.toml pins it; serve/on_ray/contract.py lists what it relies on)")


RAY_STARTUP_TIMEOUT = STARTUP_TIMEOUT.value  # Ray's message when its raylet did not register in time


def init_with_retry(init: Callable[[], object], clean_up: Callable[[], None]) -> None:
    """Start Ray; if its node timed out during startup, clean up and start it once more, saying so.

    Ray gives its raylet a fixed 30 s to register; on a busy 2-core machine that once ran out (a fresh-clone
    CI run, 2026-11-29). Any other failure, or a second timeout, is raised.
    """
    try:
        init()
    except Exception as error:
        if RAY_STARTUP_TIMEOUT not in str(error):
            raise
        print(f"optiserve: Ray's node timed out during startup ({error}); starting it once more", flush=True)
        clean_up()
        init()


def _stop_failed_ray_node() -> None:
    """After a failed ray.init: Ray's node had started its processes (GCS, raylet, agents) but never became
    this process's node, so ray.shutdown() alone leaves them running. They are this process's children."""
    import psutil
    import ray

    ray.shutdown()
    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


REPLICA_PORT_BLOCK = 200  # ports for one server's replicas: a restarted replica's old port rests for 150 s
REPLICA_PORT_BLOCKS = range(20_000, 30_000, REPLICA_PORT_BLOCK)  # below Linux's ephemeral ports (32768-)


def free_port_block(http_port: int) -> tuple[int, int]:
    """[first, end) of REPLICA_PORT_BLOCK ports that nothing listens on, for this server's replicas and proxy.

    Every Ray instance puts its fallback proxy on port 8500, listening with SO_REUSEPORT, and gives its
    replicas ports from 30000 up. Two embedded servers on one host then shared the fallback proxy's port, and
    the kernel split connections between the two servers (seen in the tests: one server answered with the
    other's settings).
    The search starts at a block chosen by the server's own HTTP port, so servers starting together spread.
    """
    blocks = list(REPLICA_PORT_BLOCKS)
    start = http_port % len(blocks)
    for first in blocks[start:] + blocks[:start]:
        # no SO_REUSEADDR: a bind fails where anything listens, a replica or Ray's fallback proxy
        if not any(_bind_error("127.0.0.1", port) for port in range(first, first + REPLICA_PORT_BLOCK)):
            return first, first + REPLICA_PORT_BLOCK
    raise RuntimeError(f"no {REPLICA_PORT_BLOCK} free ports in a row between {blocks[0]} and "
                       f"{blocks[-1] + REPLICA_PORT_BLOCK} for the replicas")


def _check_port_free(host: str, port: int) -> None:
    """Fail before Ray starts if the HTTP port is taken: the ingress binds it only once the models have replicas,
    and a failed bind there would only show in Ray's logs."""
    error = _bind_error(host, port, reuse_address=True)  # as HAProxy binds: TIME_WAIT does not count
    if error is not None:
        raise ValueError(f"cannot listen on {host}:{port} ({error.strerror}): expected a free port (--port)")


def own_ports_environment(block: tuple[int, int]) -> dict[str, str]:
    """Ray Serve's listening ports for one embedded server, all inside `block`: its replicas', and its
    fallback proxy's (Ray's defaults, 8500 and 9500, are the same for every Ray instance on the host), and
    room above the replicas' for their own servers (serve/on_ray/replica_http.py)."""
    first, end = block
    replica_ports = (end - first - 2) // 2  # the 2 fallback proxy ports at the top; Ray's, then the replicas' own
    return {
        FALLBACK_HTTP_PORT.name: str(end - 1),
        FALLBACK_GRPC_PORT.name: str(end - 2),
        # each replica's own server listens just past this range (serve/on_ray/ingress.py, port_offset)
        REPLICA_MIN_PORT.name: str(first),
        REPLICA_MAX_PORT.name: str(first + replica_ports - 1),
    }


def _bind_error(host: str, port: int, reuse_address: bool = False) -> OSError | None:
    """Why binding `host:port` fails now (None: it would succeed); the probe socket is closed at once."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        if reuse_address:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error
    return None


def _routes_url(settings: ServeSettings) -> str:
    """Where this machine reaches its own ingress's route table (a wildcard bind is reached on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}{ROUTES.value}"


def _fit_replicas_to_cpus(settings: ServeSettings, replicas: int) -> ServeSettings:
    """On one machine every replica must fit: shrink each replica's CPU reservation if they would not."""
    import ray

    fit = ray.cluster_resources().get("CPU", 1) / replicas
    if settings.replica_cpus <= fit:
        return settings
    print(f"optiserve: {replicas} replicas x {settings.replica_cpus} CPU exceed this machine's CPUs; "
          f"reserving {fit:.2f} CPU each", flush=True)
    return settings.model_copy(update={"replica_cpus": fit})


def stop(settings: ServeSettings) -> None:
    """Stop taking connections, let requests in flight finish, then stop Serve and Ray."""
    import ray
    from ray import serve

    if settings.ingress == "haproxy":
        _soft_stop_haproxy(settings.stop_grace_s)
    serve.shutdown()
    ray.shutdown()


def _soft_stop_haproxy(grace_s: float) -> None:
    """SIGUSR1 is HAProxy's soft stop: it closes its listeners (new connections are refused), answers the
    requests in flight, then exits. Ray Serve's own shutdown kills HAProxy at once, cutting them off."""
    import psutil

    ingress = [p for p in psutil.Process().children(recursive=True) if _is_haproxy(p)]
    if not ingress:
        print(f"optiserve: warning: found no process named {PROCESS_NAME.value!r} among this server's: requests "
              "in flight at the ingress are not given time to finish (serve/on_ray/contract.py)", flush=True)
    for process in ingress:
        process.send_signal(signal.SIGUSR1)
    gone, alive = psutil.wait_procs(ingress, timeout=grace_s)
    print(f"optiserve: ingress stopped taking connections; {len(gone)} of {len(ingress)} HAProxy processes "
          f"finished their requests within {grace_s:g} s", flush=True)


def _is_haproxy(process) -> bool:
    try:
        return process.name() == PROCESS_NAME.value
    except Exception:  # psutil.Error: the process went away or is not ours to inspect
        return False


def serve_until_signalled(paths: list[Path], settings: ServeSettings) -> None:
    """Run the server in the foreground until SIGINT or SIGTERM, then stop it cleanly."""
    stop_requested = threading.Event()
    served = start(paths, settings, stop_requested)
    models = ", ".join(f"{v.manifest.name} v{v.manifest.version}" for v in served)
    print(f"optiserve: serving {models} on http://{settings.host}:{settings.port}/v2 "
          f"({settings.ingress} ingress); metrics on http://127.0.0.1:{settings.metrics_port}/metrics", flush=True)
    stop_requested.wait()
    print("optiserve: stopping", flush=True)
    stop(settings)
