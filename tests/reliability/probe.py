"""A light client that measures the server while locust loads it.

Under overload on a 2-core machine, locust itself is saturated: a response can wait in its event loop
before it is timed, so its latencies include its own queueing. The probe's few threads are idle almost
all the time, so what it times is the server's answer. Bounded in count and time; loopback only.
"""

from __future__ import annotations

import http.client
import threading
import time
from urllib.parse import urlsplit

import numpy as np

from loadtests.inputs import digits_body, random_digits

NO_ANSWER = 0  # status recorded when the connection failed instead of answering


class Probe:
    """`clients` keep-alive connections, each sending one digits request every 1 / `per_client_rps` s."""

    def __init__(self, url: str, max_s: float, clients: int = 4, per_client_rps: float = 25,
                 path: str = "/v2/models/digits/infer") -> None:
        parts = urlsplit(url)
        assert parts.hostname in ("127.0.0.1", "::1", "localhost"), f"loopback only, got {url}"
        self.host, self.port, self.path, self.max_s = parts.hostname, parts.port, path, max_s
        self.interval_s, self.clients = 1 / per_client_rps, clients
        self.body = digits_body(random_digits(np.random.default_rng(7), 1))
        self._stop = threading.Event()
        self._rows: list[tuple[float, int, float]] = []
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> "Probe":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        end = time.monotonic() + self.max_s
        while not self._stop.is_set() and time.monotonic() < end:
            started, clock = time.time(), time.perf_counter()
            try:
                connection.request("POST", self.path, self.body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = NO_ANSWER
                connection.close()
            self._rows.append((started, status, (time.perf_counter() - clock) * 1000))
            self._stop.wait(max(0.0, self.interval_s - (time.perf_counter() - clock)))
        connection.close()

    def rows(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """(status, ms) of the probe's requests started in [t0, t1)."""
        chosen = [(status, ms) for started, status, ms in list(self._rows) if t0 <= started < t1]
        statuses = np.array([status for status, _ in chosen], dtype=int)
        return statuses, np.array([ms for _, ms in chosen], dtype=float)
