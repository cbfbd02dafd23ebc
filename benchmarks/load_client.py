"""The one load client every system gets: closed-loop aiohttp, KServe V2 JSON bodies, cache-cold.

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

import numpy as np

DIGITS_POOL = 20_000
TEXT_POOL = 120_000
HEADERS = {"Content-Type": "application/json"}


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


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _closed_loop(url: str, bodies, concurrency: int, seconds: float, timeout_s: float) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def client() -> None:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                try:
                    async with session.post(url, data=bodies.next(), headers=HEADERS) as response:
                        await response.read()
                        outcome = "ok" if response.status == 200 else str(response.status)
                except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                    outcome = type(error).__name__
                if outcome == "ok":
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[outcome] = errors.get(outcome, 0) + 1

        cpu_before, began = _cpu_seconds(), time.monotonic()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed, cpu = time.monotonic() - began, _cpu_seconds() - cpu_before
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1e3 if latencies else float("nan"),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3 if latencies else float("nan"),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "client_cpu": cpu / elapsed,  # cores the client process used
    }


def closed_loop(url: str, bodies, concurrency: int, seconds: float, timeout_s: float = 30) -> dict:
    """Run the closed loop on a fresh event loop (uvloop when installed) and return its numbers."""
    try:
        import uvloop

        return uvloop.run(_closed_loop(url, bodies, concurrency, seconds, timeout_s))
    except ImportError:
        return asyncio.run(_closed_loop(url, bodies, concurrency, seconds, timeout_s))
