"""An artifact loaded into onnxruntime, verified against its manifest (and tokenizer) first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from optimize.manifest import load_verified
from serve.text import TextEncoder


def load_model(artifact_dir: Path, intra_op_threads: int = 1):
    """Verify the artifact, then load it with the runtime its manifest names."""
    manifest, model_path = load_verified(Path(artifact_dir))
    if manifest.runtime == "torchscript":
        from serve.torch_model import TorchScriptModel

        return TorchScriptModel(manifest, model_path, intra_op_threads)
    return OnnxModel(Path(artifact_dir), intra_op_threads)


class OnnxModel:
    def __init__(self, artifact_dir: Path, intra_op_threads: int = 1) -> None:
        self.manifest, model_path = load_verified(Path(artifact_dir))
        if self.manifest.runtime != "onnxruntime":
            raise ValueError(f"{artifact_dir}: expected runtime onnxruntime, manifest says {self.manifest.runtime}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self._session.get_outputs()]
        text = self.manifest.text_input
        self._text = TextEncoder(Path(artifact_dir), text) if text is not None else None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run every output for a batch of request inputs (strings are tokenized first)."""
        if self._text is not None:
            if len(self.output_names) != 1:
                raise ValueError(f"text models: expected one output, {self.manifest.name} has {self.output_names}")
            texts = inputs[self.manifest.text_input.name]
            return {self.output_names[0]: self._text.run_grouped(
                texts, lambda feed: self._session.run(self.output_names, feed)[0])}
        return dict(zip(self.output_names, self._session.run(self.output_names, inputs)))
