"""Whether a candidate is faster or slower than fp32 beyond the noise of the machine that timed them.

The candidates are timed in rounds, each round running every model once in
turn (optimize/measure.py), so a candidate's i-th time and fp32's i-th time
were taken side by side and their ratio cancels most of a shared machine's
slow spells. The rounds at each batch size are cut into `timing_blocks`
contiguous blocks; in each block a candidate's relative latency is the median
of its ratios there. Then:

- **slower** at a batch size: relative latency above 1 in every block;
- **faster**: relative latency (geometric mean over batch sizes) at most
  `1 - min_speedup` in the median block, and below 1 in every block;
- **clearly slower**: above `clearly_slower` after the first block at any
  batch size; its timing stops there.

Anything else is level with fp32, which is not a reason to ship it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Samples = dict[str, dict[int, list[float]]]  # model -> batch size -> ms per round


@dataclass(frozen=True)
class Speed:
    """A candidate's latency relative to fp32 (below 1: faster), and what it proves."""

    relative: float  # geometric mean over batch sizes, median block
    low: float  # the lowest and highest block
    high: float
    faster: bool
    slower_at: tuple[int, ...]
    stopped: str | None = None  # why it was timed no further, if it was clearly slower

    def describe(self) -> str:
        return f"{self.relative:.2f}x fp32's latency (blocks {self.low:.2f}-{self.high:.2f}x)"


def _ratios(samples: Samples, name: str, baseline: str, batch_size: int) -> np.ndarray:
    ours = samples[name][batch_size]
    return np.asarray(ours) / np.asarray(samples[baseline][batch_size][: len(ours)])


def clearly_slower(samples: Samples, baseline: str, limit: float) -> dict[str, str]:
    """The models whose median ratio so far exceeds `limit` at some batch size, with what was seen."""
    found = {}
    for name, by_batch in samples.items():
        for batch_size, times in by_batch.items():
            if name != baseline and times:
                ratio = float(np.median(_ratios(samples, name, baseline, batch_size)))
                if ratio > limit:
                    found[name] = f"{ratio:.1f}x fp32's latency at batch size {batch_size} after {len(times)} runs"
                    break
    return found


def compare(samples: Samples, baseline: str, blocks: int, min_speedup: float,
            stopped: dict[str, str]) -> dict[str, Speed]:
    """Every model but `baseline` against it, by the rules above."""
    speeds = {}
    for name, by_batch in samples.items():
        if name == baseline:
            continue
        timed = [b for b, times in by_batch.items() if times]
        per_block = {b: [float(np.median(block)) for block in
                         np.array_split(_ratios(samples, name, baseline, b), min(blocks, len(by_batch[b])))]
                     for b in timed}
        block_count = min(len(medians) for medians in per_block.values())
        geometric = [float(np.exp(np.mean([np.log(per_block[b][k]) for b in timed]))) for k in range(block_count)]
        relative = float(np.median(geometric))
        slower_at = tuple(b for b in timed if min(per_block[b]) > 1)
        faster = name not in stopped and relative <= 1 - min_speedup and max(geometric) < 1
        speeds[name] = Speed(relative, min(geometric), max(geometric), faster, slower_at, stopped.get(name))
    return speeds
