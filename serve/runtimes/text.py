"""Strings to token ids inside the replica, in length-sorted groups padded to their longest.

Tokenizing in the batch (not per request) lets requests of any length share
one model call. Padding a whole batch to its longest sentence wastes compute
on pad tokens (on a CPU, often more than batching saves), so the batch is
sorted by length and cut into groups of similar length: a group closes when
padding would make up more than `padding_limit` of its tokens, or its padded
size would pass `token_budget`. Each group runs padded to its own longest,
masked, and the rows go back in request order. An answer does not depend on
its neighbours beyond float rounding (or the manifest's batch_deviation for
dynamic int8).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, MutableMapping

import numpy as np
from tokenizers import Tokenizer

from optimize.manifest import TextInput

Feed = dict[str, np.ndarray]
# Most padded tokens per model call, unless configured (OPTISERVE_TEXT_TOKEN_BUDGET): no limit of its own by default.
TOKEN_BUDGET = 1 << 20
# Largest share of a call's tokens that may be padding, unless configured (OPTISERVE_TEXT_PADDING_LIMIT). On a CPU,
# groups of similar length: all-MiniLM-L6-v2 spends 22-31% less CPU per sentence than one sentence per call (padding
# share 5-10%, the best; 40% loses most of it; docs/BENCHMARKS.md, "Text batching"). On a GPU, padding the whole batch
# is what pays.
CPU_PADDING_LIMIT = 0.1
GPU_PADDING_LIMIT = 1.0


def choose_token_budget(configured: int | None) -> int:
    return configured or TOKEN_BUDGET


def choose_padding_limit(configured: float | None, on_gpu: bool) -> float:
    if configured is not None:
        return configured
    return GPU_PADDING_LIMIT if on_gpu else CPU_PADDING_LIMIT


def device_text_encoder(artifact_dir: Path, spec: TextInput, token_budget: int | None, padding_limit: float | None,
                        on_gpu: bool, token_multiple: int = 1) -> "TextEncoder":
    """A TextEncoder with the configured budget and padding limit, or this device's defaults where not set."""
    return TextEncoder(artifact_dir, spec, choose_token_budget(token_budget),
                       choose_padding_limit(padding_limit, on_gpu), token_multiple)


def tokenize_in_calling_thread(on_gpu: bool, environ: MutableMapping[str, str] = os.environ) -> None:
    """On a CPU, tokenizers' encode_batch_fast runs in the caller's thread (unless TOKENIZERS_PARALLELISM is set).

    Its own thread pool keeps its threads spinning after each batch: CPU the model needs where replicas =
    cores (MiniLM at 8 concurrent clients: +2-7%, docs/BENCHMARKS.md). Tokenizers reads the variable at each
    call. On a GPU whole batches are tokenized at once, where the pool may pay: left as it is (not measured).
    """
    if not on_gpu:
        environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class TextEncoder:
    def __init__(self, artifact_dir: Path, spec: TextInput, token_budget: int = TOKEN_BUDGET,
                 padding_limit: float = CPU_PADDING_LIMIT, token_multiple: int = 1) -> None:
        """token_multiple: pad each call's token axis up to a multiple of it (never past max_length), so that
        calls come in few shapes (CUDA graphs are captured per shape)."""
        if not 0 <= padding_limit <= 1:
            raise ValueError(f"padding_limit: expected a share of tokens from 0 to 1, got {padding_limit}")
        self._spec = spec
        self._budget = token_budget
        self._padding_limit = padding_limit
        self.pad_tokens_to_multiple_of(token_multiple)
        self._tokenizer = Tokenizer.from_file(str(Path(artifact_dir) / spec.tokenizer_file))
        self._tokenizer.enable_truncation(spec.max_length)
        self._tokenizer.no_padding()

    def pad_tokens_to_multiple_of(self, multiple: int) -> None:
        """From the next call on, pad the token axis up to a multiple of `multiple` (1: to the longest only)."""
        if multiple < 1:
            raise ValueError(f"expected a token_multiple of at least 1, got {multiple}")
        self._multiple = multiple

    def encode(self, texts: np.ndarray) -> Feed:
        """All strings as one call's inputs: token ids and attention mask, shape [len(texts), longest]."""
        ids = self._token_ids(texts)
        return self._padded(ids, range(len(ids)))

    def run_grouped(self, texts: np.ndarray, run: Callable[[Feed], np.ndarray]) -> np.ndarray:
        """`run` over length-sorted groups of the strings; outputs reassembled in the strings' order."""
        calls = self.grouped_feeds(texts)
        results: list[np.ndarray | None] = [None] * sum(len(rows) for rows, _ in calls)
        for rows, feed in calls:
            for row, output in zip(rows, run(feed)):
                results[row] = output
        return np.stack(results)

    def grouped_feeds(self, texts: np.ndarray) -> list[tuple[list[int], Feed]]:
        """The model calls run_grouped makes for these strings: each group's rows (indices into the flattened
        strings) and its inputs."""
        ids = self._token_ids(texts)
        return [(group, self._padded(ids, group)) for group in self._groups(ids)]

    def _token_ids(self, texts: np.ndarray) -> list[list[int]]:
        """Each string's token ids, truncated. encode_batch_fast skips the character offsets, which nothing
        here reads: 40 against 48 µs per bench sentence (docs/BENCHMARKS.md, "Text batching")."""
        return [e.ids for e in self._tokenizer.encode_batch_fast(list(texts.ravel()))]

    def _groups(self, ids: list[list[int]]) -> Iterator[list[int]]:
        order = sorted(range(len(ids)), key=lambda row: len(ids[row]))
        group: list[int] = []
        tokens = 0  # the group's real (unpadded) tokens
        for row in order:  # ascending length: the newest row is the group's longest
            length = len(ids[row])
            padded = (len(group) + 1) * length
            if group and (padded > self._budget or padded - tokens - length > self._padding_limit * padded):
                yield group
                group, tokens = [], 0
            group.append(row)
            tokens += length
        if group:
            yield group

    def _padded(self, ids: list[list[int]], rows) -> Feed:
        rows = list(rows)
        longest = max(len(ids[row]) for row in rows)
        longest = min(-(-longest // self._multiple) * self._multiple, self._spec.max_length)  # ids are truncated
        token_ids = np.zeros((len(rows), longest), dtype=np.int64)  # 0 is [PAD] for BERT vocabularies
        mask = np.zeros((len(rows), longest), dtype=np.int64)
        for index, row in enumerate(rows):
            token_ids[index, : len(ids[row])] = ids[row]
            mask[index, : len(ids[row])] = 1
        return {self._spec.ids_input: token_ids, self._spec.mask_input: mask}
