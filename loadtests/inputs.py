"""Request bodies for the load tests, chosen by input distribution.

- `unique`: every request carries a new input, so the server's result cache never hits (cache-cold).
- `zipf`: inputs come from a fixed pool of `pool_size` bodies, rank k drawn with probability
  proportional to 1 / k**s, like real traffic where a few inputs are popular (cache-warm).

No locust import here: the load generator and the tests share this module.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import orjson

DISTRIBUTIONS = ("unique", "zipf")
DIGITS_FEATURES = 64  # 8x8 images, pixel values 0..16
# Words for generated sentences: enough that 8-16 word sentences are practically never repeated.
WORDS = tuple("""
the a one every this that some many few most people time year day way thing world life hand part child
eye woman man place work week case point government company number group problem fact water room mother
area money story month lot right study book job word business issue side kind head house service friend
father power hour game line end member law car city community name president team minute idea kid body
information back parent face others level office door health person art war history party result change
morning reason research girl guy moment air teacher force education foot boy age policy process music
market sense nation plan college interest death experience effect use class control care field development
role effort rate heart drug show leader light voice wife police mind price report decision son view
relationship town road arm difference value building action model season society tax director position
player record paper space ground form event official matter center couple site project activity star
table need court oil situation cost industry figure street image phone data picture practice piece land
product doctor wall patient worker news test movie north love support technology step baby computer type
attention film tree source organization hair window evidence population truth song energy bright quiet
small large quick slow green early late happy strong simple open clear warm cold new old long short runs
reads writes builds finds keeps brings holds turns starts shows hears plays moves lives believes happens
""".split())

BodyFactory = Callable[[], bytes]


def digits_body(rows: np.ndarray) -> bytes:
    """A KServe V2 JSON request for the digits model: input 'input', FP32, shape [n, 64]."""
    tensor = {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
    return orjson.dumps({"inputs": [tensor]})


def minilm_body(sentences: list[str]) -> bytes:
    """A KServe V2 JSON request for the MiniLM model: input 'text', BYTES, shape [n]."""
    tensor = {"name": "text", "shape": [len(sentences)], "datatype": "BYTES", "data": sentences}
    return orjson.dumps({"inputs": [tensor]})


def random_digits(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Images like the digits data set's: 8x8 pixels of 0..16 (17**64 possible, so never repeated)."""
    return rng.integers(0, 17, size=(rows, DIGITS_FEATURES)).astype(np.float32)


def random_sentences(rng: np.random.Generator, count: int) -> list[str]:
    def sentence() -> str:
        words = rng.choice(len(WORDS), size=int(rng.integers(8, 17)))
        return " ".join(WORDS[i] for i in words).capitalize() + "."
    return [sentence() for _ in range(count)]


class ZipfRanks:
    """Ranks 0..n-1 drawn with P(k) proportional to 1/(k+1)**s, in blocks so each draw is cheap."""

    def __init__(self, n: int, s: float, rng: np.random.Generator, block: int = 4096) -> None:
        if n < 1:
            raise ValueError(f"zipf pool size: expected >= 1, got {n}")
        if s <= 0:
            raise ValueError(f"zipf exponent s: expected > 0, got {s}")
        weights = 1.0 / np.arange(1, n + 1) ** s
        self._cdf = np.cumsum(weights) / weights.sum()
        self._rng, self._block = rng, block
        self._drawn: list[int] = []

    def next(self) -> int:
        if not self._drawn:
            uniform = self._rng.random(self._block)
            ranks = np.minimum(np.searchsorted(self._cdf, uniform, side="right"), len(self._cdf) - 1)
            self._drawn = ranks.tolist()[::-1]
        return self._drawn.pop()


def body_factory(
    model: str, distribution: str, *, rows: int = 1, pool_size: int = 10_000, zipf_s: float = 1.1,
    seed: int = 0, pool_seed: int = 0,
) -> BodyFactory:
    """A function returning the next request body for `model` (digits or minilm).

    `seed` separates the streams of different users (unique inputs stay unique across
    users); every user shares the pool built from `pool_seed`, so hits are shared too.
    """
    make = _MAKERS.get(model)
    if make is None:
        raise ValueError(f"model: expected one of {', '.join(_MAKERS)}, got {model!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"input distribution: expected one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
    if rows < 1:
        raise ValueError(f"rows per request: expected >= 1, got {rows}")
    if distribution == "unique":
        rng = np.random.default_rng([seed, 1])
        return lambda: make(rng, rows)
    pool = _pool(model, rows, pool_size, pool_seed)
    ranks = ZipfRanks(pool_size, zipf_s, np.random.default_rng([seed, 3]))
    return lambda: pool[ranks.next()]


@functools.lru_cache(maxsize=4)
def _pool(model: str, rows: int, size: int, seed: int) -> tuple[bytes, ...]:
    """The fixed pool of bodies, built once per process and shared by every user."""
    rng = np.random.default_rng([seed, 2])
    return tuple(_MAKERS[model](rng, rows) for _ in range(size))


_MAKERS: dict[str, Callable[[np.random.Generator, int], bytes]] = {
    "digits": lambda rng, rows: digits_body(random_digits(rng, rows)),
    "minilm": lambda rng, rows: minilm_body(random_sentences(rng, rows)),
}
