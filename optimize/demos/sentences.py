"""English-like sentences generated in code (no downloads): calibration, validation and load data.

A small grammar over a fixed vocabulary, seeded, so every run sees the same
sentences; lengths vary from a few words to a few dozen, as real queries do.
"""

from __future__ import annotations

import numpy as np

_SUBJECTS = (
    "the engineer", "a small team", "the old server", "my neighbour", "the river", "a quiet student",
    "the city council", "our model", "the night train", "a curious cat", "the bakery", "every replica",
    "the weather service", "a young doctor", "the library", "this dataset",
)
_VERBS = (
    "measures", "builds", "forgets", "explains", "serves", "watches", "repairs", "predicts", "reads",
    "crosses", "rejects", "caches", "paints", "follows", "compresses", "answers",
)
_OBJECTS = (
    "the latency of each request", "a bright red bicycle", "the mountain road", "three cold coffees",
    "the quarterly report", "a batch of thirty-two sentences", "the broken window", "an angry customer",
    "the results of the vote", "a recipe for apple pie", "the hidden cache", "the summer festival",
    "a map of the harbour", "the first chapter", "every failing test", "the price of bread",
)
_TAILS = (
    "before the sun rises", "without saying a word", "because nobody else would", "on a rainy tuesday",
    "while the queue keeps growing", "after the meeting ran late", "in the middle of the night",
    "with surprising patience", "as the crowd cheered", "for the third time this week",
)
_CONNECTORS = ("and then", "but", "so", "while", "because")


def _clause(rng: np.random.Generator) -> str:
    words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
    if rng.random() < 0.6:
        words.append(rng.choice(_TAILS))
    return " ".join(words)


def generate_sentences(count: int, seed: int) -> list[str]:
    """`count` sentences of one to four clauses (about 5 to 60 tokens), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    sentences = []
    for _ in range(count):
        clauses = [_clause(rng) for _ in range(rng.integers(1, 5))]
        text = clauses[0]
        for clause in clauses[1:]:
            text += f" {rng.choice(_CONNECTORS)} {clause}"
        sentences.append(text[0].upper() + text[1:] + ".")
    return sentences
