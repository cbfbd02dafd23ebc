"""The one load client every system gets: closed-loop keep-alive HTTP/1.1, KServe V2 JSON bodies, cache-cold.

`concurrency` clients each send a request, wait for the answer, and send the
next, for a fixed time. Every body is unique for the life of a server (a
per-request counter goes into the first digits pixel; MiniLM sentences are
drawn without repeats from a seeded pool), so no result cache can answer
from memory. The client's own CPU time is measured with the run, to show
how much of the shared 2 cores it took.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import resource
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

DIGITS_POOL = 20_000
TEXT_POOL = 120_000


class DigitsBodies:
    """`{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":[...]}]}`, one row each."""

    def __init__(self, seed: int = 0) -> None:
        rows = np.random.default_rng(seed).random((DIGITS_POOL, 64), dtype=np.float32) * 16
        self._head = b'{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":['
        self._tails = [(",".join(f"{v:.4f}" for v in row[1:]) + "]}]}").encode() for row in rows]
        self._counter = itertools.count()

    def next(self) -> bytes:
        n = next(self._counter)
        # the first pixel carries the counter: unique for a million requests
        return b"".join((self._head, f"{(n % 1_000_000) * 1.6e-5:.6f},".encode(), self._tails[n % DIGITS_POOL]))


class TextBodies:
    """`{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["..."]}]}`, one sentence each.

    Sentences are 8-30 words drawn (seeded) from whole-word entries of the
    model's own WordPiece vocabulary, so each word is about one token.
    """

    def __init__(self, tokenizer_json: Path, seed: int = 0) -> None:
        vocab = json.loads(tokenizer_json.read_text())["model"]["vocab"]
        words = [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])
                 if w.isalpha() and w.islower() and 3 <= len(w) <= 10][:5000]
        rng = random.Random(seed)
        self._bodies = [
            json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                    "data": [" ".join(rng.choices(words, k=rng.randint(8, 30)))]}]}).encode()
            for _ in range(TEXT_POOL)
        ]
        self._counter = itertools.count()

    def next(self) -> bytes:
        return self._bodies[next(self._counter) % TEXT_POOL]

    def sentences(self, count: int) -> list[str]:
        return [json.loads(self._bodies[i])["inputs"][0]["data"][0] for i in range(count)]


def bodies_for(model: str, artifact: Path) -> DigitsBodies | TextBodies:
    """The request bodies for a model of the benchmarks: sentences for minilm (from its tokenizer), digits else."""
    return TextBodies(artifact / "tokenizer.json") if model == "minilm" else DigitsBodies()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time, parsed by httptools.

    A general client (aiohttp) spent about 80 us of CPU per request here, on the
    same 2 cores as the server it measures; this one writes prebuilt request
    bytes and reads only the status line, so more of the machine is left to
    the server.
    """

    def __init__(self) -> None:
        import httptools

        self._parser = httptools.HttpResponseParser(self)
        self._parser_error = httptools.HttpParserError
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except self._parser_error as error:
            self._fail(error)

    def on_message_complete(self) -> None:  # httptools callback: the whole response is in
        if not self._parser.should_keep_alive() and self._transport is not None:
            self._transport.close()  # the server said `Connection: close`: the next request reconnects
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._parser.get_status_code())

    def connection_lost(self, error: Exception | None) -> None:
        self._transport = None
        self._fail(error or ConnectionResetError("the server closed the connection"))

    def _fail(self, error: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        if self._transport is not None:
            self._transport.abort()

    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def close(self) -> None:
        if self.open:
            self._transport.close()

    async def send(self, request: bytes, timeout_s: float) -> int:
        """Write one whole request and return the response's status code."""
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        timer = loop.call_later(timeout_s, self._fail, TimeoutError(f"no answer in {timeout_s} s"))
        self._transport.write(request)
        try:
            return await self._waiter
        finally:
            timer.cancel()
            self._waiter = None


def _request_head(url: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"expected an http://host:port/path URL, got {url!r}")
    port = parts.port or 80
    head = (f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.hostname}:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: ").encode()
    return parts.hostname, port, head


async def run_closed_loop(url: str, bodies, concurrency: int, seconds: float, timeout_s: float) -> dict:
    host, port, head = _request_head(url)
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.monotonic() + seconds

    async def client() -> None:
        connection: _Connection | None = None
        while time.monotonic() < stop_at:
            body = bodies.next()
            started = time.perf_counter()
            try:
                if connection is None or not connection.open:
                    _, connection = await loop.create_connection(_Connection, host, port)
                status = await connection.send(b"%s%d\r\n\r\n%s" % (head, len(body), body), timeout_s)
                outcome = "ok" if status == 200 else str(status)
            except (OSError, TimeoutError, ValueError) as error:  # httptools' parser error is a ValueError
                outcome, connection = type(error).__name__, None
                await asyncio.sleep(0.01)  # no hot loop against a server that is down
            if outcome == "ok":
                latencies.append(time.perf_counter() - started)
            else:
                errors[outcome] = errors.get(outcome, 0) + 1
        if connection is not None:
            connection.close()

    cpu_before, began = _cpu_seconds(), time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed, cpu = time.monotonic() - began, _cpu_seconds() - cpu_before
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1e3 if latencies else float("nan"),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3 if latencies else float("nan"),
        "answered": len(latencies),  # 200s
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "client_cpu": cpu / elapsed,  # cores the client process used
    }


def closed_loop(url: str, bodies, concurrency: int, seconds: float, timeout_s: float = 30) -> dict:
    """Run the closed loop on a fresh event loop (uvloop when installed) and return its numbers."""
    try:
        import uvloop

        return uvloop.run(run_closed_loop(url, bodies, concurrency, seconds, timeout_s))
    except ImportError:
        return asyncio.run(run_closed_loop(url, bodies, concurrency, seconds, timeout_s))
