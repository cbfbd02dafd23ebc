"""A Hugging Face model directory, as `save_pretrained` writes it, taken directly by `optiserve optimize`.

The directory holds `config.json`, the weights and the fast tokenizer's
`tokenizer.json`. A sequence classifier (its config names a
`...ForSequenceClassification` architecture) becomes a TextClassifierSource,
judged by top-1 against the labels in `--data`; any other model becomes an
EmbeddingSource: mean pooling over real tokens and L2 normalization, as
sentence-transformers computes, judged by cosine to fp32. Either way the
module is exported with torch's exporter and checked numerically like every
export, and the artifact takes strings.

`--data` holds labelled sentences: a `.jsonl` file of `{"text": ..., "label": ...}`
lines (a label is a class index or one of the config's `label2id` names), or
an `.npz` with `texts` and `labels`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from optimize.source import EmbeddingSource, TextClassifierSource

LONGEST = 512  # tokens kept per sentence at most, whatever the model's position table allows


def is_model_directory(reference: str) -> bool:
    return Path(reference).is_dir() and (Path(reference) / "config.json").is_file()


def huggingface_source(directory: Path, data: str, name: str, version: str = "1"):
    """A TextClassifierSource or an EmbeddingSource for the model saved in `directory`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory: never reach for the hub
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    tokenizer = directory / "tokenizer.json"
    if not tokenizer.is_file():
        raise ValueError(f"{directory}: expected tokenizer.json (a fast tokenizer, as "
                         "tokenizer.save_pretrained writes it) beside config.json")
    texts, labels = load_texts(data, config.get("label2id") or {})
    max_length = _max_length(directory, config)
    if any(str(architecture).endswith("ForSequenceClassification") for architecture in config.get("architectures") or []):
        if labels is None:
            raise ValueError(f"data {data!r}: a sequence classifier is judged against labels; expected a label "
                             "for every sentence")
        return TextClassifierSource(name, version, logits_module(directory), tokenizer, max_length, texts, labels)
    return EmbeddingSource(name, version, mean_pooled_module(directory), tokenizer, max_length, texts)


def _max_length(directory: Path, config: dict) -> int:
    """sentence-transformers' max_seq_length where the directory has it, else the position table, at most
    LONGEST tokens."""
    sentence_config = directory / "sentence_bert_config.json"
    if sentence_config.is_file():
        return min(int(json.loads(sentence_config.read_text()).get("max_seq_length", LONGEST)), LONGEST)
    return min(int(config.get("max_position_embeddings", LONGEST)), LONGEST)


def load_texts(data: str, label2id: dict[str, int]) -> tuple[tuple[str, ...], np.ndarray | None]:
    """(sentences, labels or None) from a .jsonl of {"text", "label"} or an .npz with texts and labels."""
    path = Path(data)
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not rows or any("text" not in row for row in rows):
            raise ValueError(f"{path}: expected one JSON object per line with a \"text\" (and a \"label\")")
        texts = tuple(str(row["text"]) for row in rows)
        raw = [row.get("label") for row in rows]
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "texts" not in archive:
                raise ValueError(f"{path}: expected an array named texts (and labels), found {', '.join(archive.files)}")
            texts = tuple(str(text) for text in archive["texts"])
            raw = list(archive["labels"]) if "labels" in archive else [None] * len(texts)
    else:
        raise ValueError(f"data {data!r}: expected labelled sentences in a .jsonl or .npz file")
    if all(label is None for label in raw):
        return texts, None
    return texts, np.array([_class_index(label, label2id) for label in raw], dtype=np.int64)


def _class_index(label, label2id: dict[str, int]) -> int:
    if isinstance(label, str) and label in label2id:
        return int(label2id[label])
    try:
        return int(label)
    except (TypeError, ValueError):
        raise ValueError(f"label {label!r}: expected a class index or one of {', '.join(label2id) or '(none)'}") \
            from None


def logits_module(directory: Path):
    """(input_ids, attention_mask) -> the classifier's logits."""
    import torch
    from transformers import AutoModelForSequenceClassification

    class Logits(torch.nn.Module):
        def __init__(self, classifier: torch.nn.Module) -> None:
            super().__init__()
            self.classifier = classifier

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.classifier(input_ids=input_ids, attention_mask=attention_mask).logits

    return Logits(AutoModelForSequenceClassification.from_pretrained(directory)).eval()


def mean_pooled_module(directory: Path):
    """(input_ids, attention_mask) -> one L2-normalized vector per sentence: the mean of its real tokens."""
    import torch
    from transformers import AutoModel

    class MeanPooledEmbedding(torch.nn.Module):
        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return MeanPooledEmbedding(AutoModel.from_pretrained(directory)).eval()
