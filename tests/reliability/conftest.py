"""One real server for the reliability tests: two replicas each of digits and MiniLM, the shared Redis
tier, on loopback. The tests load digits; MiniLM gets a short load test of its own.

Durations: the tests in `make test` are short versions. OPTISERVE_SOAK_S=600
(`make soak`) and OPTISERVE_OVERLOAD_S=60 (`make overload`) run the full ones.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from optiserve.local_server import RunningServer, start_server, stop_server
from tests.redis_server import REDIS_SERVER, SKIP_REASON, RedisProcess
from tests.reliability.load import run_locust

SOAK_S = float(os.environ.get("OPTISERVE_SOAK_S", 60))
OVERLOAD_S = float(os.environ.get("OPTISERVE_OVERLOAD_S", 20))
SATURATION_USERS = 32  # closed loop, back to back: more users than this add latency, not throughput
REQUEST_TIMEOUT_MS = 10_000  # the server's default deadline


@pytest.fixture(scope="package")
def redis_process():
    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    process = RedisProcess().start()
    yield process
    process.stop()


@pytest.fixture(scope="package")
def server(digits_artifact, minilm_artifact, redis_process, tmp_path_factory) -> RunningServer:
    log = tmp_path_factory.mktemp("reliability") / "server.log"
    artifacts = [digits_artifact, minilm_artifact]
    running = _start(artifacts, log, redis_process.url)
    _started[id(running)] = (artifacts, log, redis_process.url)
    yield running
    assert stop_server(running) == 0, f"server did not stop cleanly:\n{log.read_text()[-3000:]}"


_started: dict[int, tuple] = {}  # how each server was started, so a test can restart it the same way


def _start(artifacts: list[Path], log: Path, redis_url: str, port: int = 0, metrics_port: int = 0) -> RunningServer:
    return start_server(artifacts, log, "--replicas", "2", "--request-timeout-ms", str(REQUEST_TIMEOUT_MS),
                        port=port, metrics_port=metrics_port, env={"OPTISERVE_REDIS_URL": redis_url})


def restart(server: RunningServer) -> tuple[float, float]:
    """Stop the server (SIGTERM) and start it again on the same ports; `server` then is the new one.

    Returns when the stop began and when the new server was ready (seconds since the epoch).
    """
    artifacts, log, redis_url = _started[id(server)]
    port, metrics_port = int(server.url.rsplit(":", 1)[1]), int(server.metrics_url.split(":")[2].split("/")[0])
    stopping = time.time()
    assert stop_server(server) == 0, f"server did not stop cleanly:\n{log.read_text()[-3000:]}"
    log.rename(log.with_suffix(f".{int(stopping)}.log"))
    new = _start(artifacts, log, redis_url, port, metrics_port)
    server.process = new.process
    return stopping, time.time()


@pytest.fixture
def out(tmp_path) -> Path:
    """Where a test's locust reports go (CSV, HTML, ledger, log)."""
    return tmp_path / "locust"


@dataclass(frozen=True)
class Saturation:
    rps: float  # answers per second with SATURATION_USERS back-to-back users
    p99_ms: float


@pytest.fixture(scope="package")
def saturation(server, tmp_path_factory) -> Saturation:
    """Measured once: the most this server answers per second on this machine, client included."""
    return measure_saturation(server.url, tmp_path_factory.mktemp("saturation") / "locust")


def measure_saturation(url: str, out: Path) -> Saturation:
    """The answers per second of SATURATION_USERS users sending back to back for 10 s."""
    run = run_locust(url, out, run_time_s=10, users=SATURATION_USERS)
    run.check_nothing_lost()
    assert run.statuses() == {200: len(run.status)}, f"errors while measuring saturation: {run.statuses()}"
    t0 = run.start.min() + 2  # past the first connections
    t1 = run.start.max()
    ok = run.rows(status=200)
    measured = Saturation(run.rate(ok, t0, t1), run.p99_ms(run.rows(t0=t0, t1=t1)))
    print(f"\nsaturation: {measured.rps:.0f} req/s, p99 {measured.p99_ms:.1f} ms "
          f"({SATURATION_USERS} users back to back, {time.strftime('%Y-%m-%d')})")
    return measured


def paced_users(total_rps: float, per_user_rps: float) -> int:
    """How many users at `per_user_rps` each offer `total_rps`."""
    return max(1, round(total_rps / per_user_rps))
