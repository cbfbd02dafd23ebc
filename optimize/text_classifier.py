"""Text classifiers in the optimize pipeline: strings in, class scores out, judged by top-1 against labels.

A TextClassifierSource is tokenized as the server will tokenize it and
optimized as a classifier with two named inputs (optimize/classifier.py:
export with dynamic batch and sequence axes checked against PyTorch, int8
candidates, top-1 or the source's metric). What it adds is the text's:
batch deviation measured with real padding neighbours, and the tokenizer in
the artifact, so the server takes strings (optimize/embedding.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from optimize.artifact import Extras
from optimize.classifier import Classifier
from optimize.embedding import Tokens, text_batch_deviation, tokenizer_extras
from optimize.kind import Built
from optimize.settings import OptimizeSettings
from optimize.source import ModelSource, TextClassifierSource

SEQUENCE = {1: "sequence"}


def tokenized_source(source: TextClassifierSource, tokens: Tokens) -> ModelSource:
    """The classifier over token ids the text source describes, its sentences tokenized (padded to the
    longest of each set)."""
    validation = tokens.feed(source.validation_texts)
    return ModelSource(
        name=source.name, version=source.version, module=source.module,
        example_input={name: array[:2] for name, array in validation.items()},
        validation_inputs=validation, validation_labels=source.validation_labels,
        calibration_inputs=tokens.feed(source.train_texts) if source.train_texts else None,
        output_name=source.output_name, metric=source.metric,
        dynamic_axes={name: SEQUENCE for name in validation},
    )


class TextClassifier(Classifier):
    """The text-classifier kind of optimize.kind.Kind."""

    def __init__(self, source: TextClassifierSource, settings: OptimizeSettings, log: Callable[[str], None]) -> None:
        self.text_source, self.tokens = source, Tokens(source)
        super().__init__(tokenized_source(source, self.tokens), settings, log)

    def batch_deviation(self, session) -> float:
        return text_batch_deviation(session, self.tokens, self.text_source.validation_texts)

    def finish(self, fp32: Built, out_dir: Path) -> Extras:
        return tokenizer_extras(self.text_source, out_dir)
