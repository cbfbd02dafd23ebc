"""Model inputs as the optimizer handles them: one array, or several named arrays that share their rows.

A source may give its inputs as one array (a model with one input) or as a
dict of arrays named as the model's inputs (token ids and an attention mask,
an image and its metadata). Everything downstream works on feeds, dicts of
arrays whose first axis is the batch, and these functions cut them by rows.
"""

from __future__ import annotations

import numpy as np

Inputs = np.ndarray | dict[str, np.ndarray]
Feed = dict[str, np.ndarray]


def as_feed(inputs: Inputs, name: str) -> Feed:
    """A dict of named arrays as it is; one array as the input called `name`."""
    return dict(inputs) if isinstance(inputs, dict) else {name: inputs}


def row_count(feed: Feed) -> int:
    return len(next(iter(feed.values())))


def take_rows(feed: Feed, rows: slice | np.ndarray) -> Feed:
    return {name: array[rows] for name, array in feed.items()}


def resize_rows(feed: Feed, count: int) -> Feed:
    """`count` rows cut from the feed, or the feed repeated row by row until it has them."""
    index = np.resize(np.arange(row_count(feed)), count)
    return {name: np.ascontiguousarray(array[index]) for name, array in feed.items()}


def check_rows_agree(feed: Feed, what: str) -> None:
    counts = {name: len(array) for name, array in feed.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name} {count}" for name, count in counts.items())
        raise ValueError(f"{what}: expected every input to have the same number of rows, got {listed}")
