"""Strings to token ids inside the replica, padded to the longest string of each batch.

Tokenizing in the batch (not per request) lets requests of any length share
one model call: every row is padded to the batch's longest and masked, so an
answer does not depend on its neighbours beyond float rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from optimize.manifest import TextInput


class TextEncoder:
    def __init__(self, artifact_dir: Path, spec: TextInput) -> None:
        self._spec = spec
        self._tokenizer = Tokenizer.from_file(str(Path(artifact_dir) / spec.tokenizer_file))
        self._tokenizer.enable_truncation(spec.max_length)
        self._tokenizer.enable_padding()  # to the longest in each encode_batch call

    def encode(self, texts: np.ndarray) -> dict[str, np.ndarray]:
        """One row per string: token ids and attention mask, shape [len(texts), longest]."""
        encodings = self._tokenizer.encode_batch(list(texts.ravel()))
        return {
            self._spec.ids_input: np.array([e.ids for e in encodings], dtype=np.int64),
            self._spec.mask_input: np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
