"""PyTorch artifacts: TorchScript (runtime "torchscript") and torch.export programs ("torch_export").

Serves what onnxruntime cannot run, such as PyTorch's own static int8
(fbgemm/x86, qnnpack) kernels on the CPU, and GPU-target artifacts on CUDA
where only PyTorch is installed: the program runs under autocast in
`torch_dtype` (fp16 or bf16) and answers in FP32. CPU-target artifacts, and
GPU-target ones on a machine without CUDA, run on the CPU in fp32. torch is
imported only when such an artifact is loaded, so an onnxruntime-only image
never needs it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optimize.manifest import Manifest


def torch_device(target: str, cuda_available: bool) -> str:
    """cuda for GPU-target artifacts where CUDA is available; the CPU otherwise (int8 kernels are CPU kernels)."""
    return "cuda" if target == "gpu" and cuda_available else "cpu"


class TorchModel:
    def __init__(self, manifest: Manifest, model_path: Path, intra_op_threads: int = 1,
                 dtype: str = "float16", text_token_budget: int | None = None) -> None:
        try:
            import torch
        except ImportError:
            raise ValueError(f"{model_path}: a {manifest.runtime} artifact needs PyTorch; expected `pip install "
                             "torch` in the serving environment") from None
        torch.set_num_threads(intra_op_threads)
        self.manifest = manifest
        self._torch = torch
        self._device = torch_device(manifest.target, torch.cuda.is_available())
        self._dtype = getattr(torch, dtype) if self._device == "cuda" else torch.float32
        self._module = self._load(model_path)
        self.output_names = [spec.name for spec in manifest.outputs]
        self._text = None
        if manifest.text_input is not None:
            from serve.text import TextEncoder, choose_token_budget

            self._text = TextEncoder(model_path.parent, manifest.text_input,
                                     choose_token_budget(text_token_budget, self._device != "cpu"))
        self.execution_provider = self._describe()

    def _load(self, model_path: Path):
        torch = self._torch
        if self.manifest.runtime == "torchscript":
            return torch.jit.load(str(model_path), map_location=self._device).eval()  # TorchScript, not pickle
        from torch.export.passes import move_to_device_pass

        program = torch.export.load(str(model_path))
        if self._device != "cpu":
            program = move_to_device_pass(program, self._device)
        return program.module()

    def _describe(self) -> str:
        if self._device == "cpu":
            return f"torch:cpu ({self.manifest.runtime}, float32)"
        name = self._torch.cuda.get_device_name(0)
        return f"torch:cuda ({self.manifest.runtime}, {name}, {str(self._dtype).removeprefix('torch.')} autocast)"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._text is not None:
            texts = inputs[self.manifest.text_input.name]
            return {self.output_names[0]: self._text.run_grouped(texts, lambda feed: self._forward(feed)[0])}
        return dict(zip(self.output_names, self._forward(inputs)))

    def _forward(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        arguments = [torch.from_numpy(np.ascontiguousarray(feed[spec.name])).to(self._device)
                     for spec in self.manifest.inputs]
        autocast = self._dtype != torch.float32
        with torch.no_grad(), torch.autocast(self._device, dtype=self._dtype, enabled=autocast):
            outputs = self._module(*arguments)
        if not isinstance(outputs, (tuple, list)):
            outputs = (outputs,)
        return [output.float().cpu().numpy() for output in outputs]
