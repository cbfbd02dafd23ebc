"""What the one optimize pipeline (optimize/pipeline.py) asks of a kind of model.

Two kinds implement it: classifiers (optimize/classifier.py: top-1 or the
source's metric, the candidate builders, a TensorRT engine) and text-embedding
models (optimize/embedding.py: cosine to fp32, the int8 accuracy guard, the
tokenizer in the artifact). Everything else (timing, judging, choosing,
shipping, the manifest) the pipeline does the same way for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from optimize.artifact import Extras
from optimize.manifest import Step
from optimize.selection import AccuracyProblem


@dataclass
class Built:
    """A candidate model file and the steps that made it."""

    path: Path
    steps: list[Step]


@dataclass(frozen=True)
class Program:
    """What torch.export needs to ship the PyTorch module itself (the GPU target's torch runtime)."""

    module: object
    example_inputs: tuple
    dynamic_shapes: tuple


class Kind(Protocol):
    source: object  # its name and version name the artifact
    metric: str  # the manifest's metric: top1, cosine_to_fp32
    prior_steps: tuple[Step, ...]  # done before the optimizer got the model
    accuracy_problem: AccuracyProblem  # what disqualifies a candidate against fp32 (optimize/selection.py)

    def export_fp32(self, work: Path) -> Built:
        """The fp32 ONNX baseline, checked against the source's own outputs."""

    def build_candidates(self, fp32: Built, work: Path) -> dict[str, Built]:
        """The variants to measure against fp32, by name."""

    def open(self, path: Path):
        """An onnxruntime session over a candidate file (or an object with the same API)."""

    def feed(self, batch_size: int) -> dict[str, np.ndarray]:
        """Model inputs for one batch of `batch_size` rows, for timing."""

    def score(self, session) -> tuple[float, float | None]:
        """(the score on the held-out data, its worst example or None)."""

    def batch_deviation(self, session) -> float:
        """How far one row's answer moves with the rows batched beside it."""

    def program(self) -> Program:
        """The module and inputs to ship as a torch.export program; ValueError where it cannot be."""

    def finish(self, fp32: Built, out_dir: Path) -> Extras:
        """Write the kind's own files into the artifact (after the model file)."""
