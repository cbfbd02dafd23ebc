"""A TorchScript artifact (runtime "torchscript"), run by PyTorch on the CPU.

Serves what onnxruntime cannot run, such as PyTorch's own static int8
(fbgemm/x86, qnnpack) kernels. torch is imported only when such an artifact
is loaded, so an onnxruntime-only image never needs it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optimize.manifest import Manifest


class TorchScriptModel:
    def __init__(self, manifest: Manifest, model_path: Path, intra_op_threads: int = 1) -> None:
        try:
            import torch
        except ImportError:
            raise ValueError(f"{model_path}: a TorchScript artifact needs PyTorch; expected `pip install torch` "
                             "in the serving environment") from None
        torch.set_num_threads(intra_op_threads)
        self.manifest = manifest
        self._torch = torch
        self._module = torch.jit.load(str(model_path), map_location="cpu").eval()  # TorchScript, not pickle
        self.output_names = [spec.name for spec in manifest.outputs]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arguments = [self._torch.from_numpy(np.ascontiguousarray(inputs[spec.name])) for spec in self.manifest.inputs]
        with self._torch.no_grad():
            outputs = self._module(*arguments)
        if not isinstance(outputs, (tuple, list)):
            outputs = (outputs,)
        return {name: output.numpy() for name, output in zip(self.output_names, outputs)}
