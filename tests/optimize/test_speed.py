"""The rules that decide whether a candidate is faster or slower than fp32 beyond the noise (pure logic on
seeded, made-up timings), and that a clearly slower model stops being timed."""

import time

import numpy as np
import pytest

from optimize import measure, speed

BLOCKS, MIN_SPEEDUP = 5, 0.05


def timings(factor_by_batch: dict[int, float], rounds: int = 200, noise: float = 0.3, seed: int = 0):
    """fp32 and a candidate timed side by side: each round shares a slow spell (the machine's noise), and the
    candidate takes `factor` times fp32 plus its own jitter of 2%."""
    rng = np.random.default_rng(seed)
    samples = {"fp32": {}, "candidate": {}}
    for batch_size, factor in factor_by_batch.items():
        spell = 1 + noise * rng.random(rounds) ** 4  # the shared machine: occasional slow rounds
        samples["fp32"][batch_size] = list(1.0 * spell * (1 + 0.02 * rng.standard_normal(rounds)))
        samples["candidate"][batch_size] = list(factor * spell * (1 + 0.02 * rng.standard_normal(rounds)))
    return samples


def judged(factor_by_batch, **kwargs) -> speed.Speed:
    return speed.compare(timings(factor_by_batch, **kwargs), "fp32", BLOCKS, MIN_SPEEDUP, {})["candidate"]


@pytest.mark.parametrize("seed", range(5))
def test_a_candidate_level_with_fp32_is_neither_faster_nor_slower(seed):
    level = judged({1: 1.0, 32: 1.0}, seed=seed)
    assert not level.faster and 0.97 < level.relative < 1.03


def test_a_clear_gain_counts_as_faster():
    faster = judged({1: 0.7, 32: 0.8})
    assert faster.faster and faster.slower_at == () and faster.high < 1
    assert faster.relative == pytest.approx(np.sqrt(0.7 * 0.8), abs=0.02)


def test_a_gain_smaller_than_the_minimum_does_not_count():
    assert not judged({1: 0.97, 32: 0.97}).faster


def test_slower_at_one_batch_size_in_every_block_is_named_even_when_faster_overall():
    mixed = judged({1: 1.1, 32: 0.5})
    assert mixed.slower_at == (1,) and mixed.relative < 1


def test_clearly_slower_names_what_it_saw():
    samples = timings({1: 200.0}, rounds=40)
    found = speed.clearly_slower(samples, "fp32", 1.5)
    assert list(found) == ["candidate"] and "at batch size 1 after 40 runs" in found["candidate"]
    assert speed.clearly_slower(timings({1: 1.2}, rounds=40), "fp32", 1.5) == {}


class BusySession:
    """Stands in for an onnxruntime session: each run spins for a set time."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.runs = seconds, 0

    def run(self, _outputs, _feed):
        self.runs += 1
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass


def test_a_clearly_slower_model_is_timed_no_further_at_any_batch_size():
    sessions = {"fp32": BusySession(1e-5), "slow": BusySession(2e-3)}
    stop = lambda samples: set(speed.clearly_slower(samples, "fp32", 1.5))  # noqa: E731
    samples = measure.interleaved_samples(sessions, lambda b: {}, (1, 32), repeats=50, stop_early=stop,
                                          first_block=10)
    assert len(samples["slow"][1]) == 10 and samples["slow"][32] == []
    assert len(samples["fp32"][1]) == 50 and len(samples["fp32"][32]) == 50
    assert sessions["slow"].runs == 3 + 10  # warm-up at batch size 1, then the first block only
