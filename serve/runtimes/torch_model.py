"""PyTorch artifacts: TorchScript (runtime "torchscript") and torch.export programs ("torch_export").

Serves what onnxruntime cannot run, such as PyTorch's own static int8
(fbgemm/x86, qnnpack) kernels on the CPU, and GPU-target artifacts on CUDA
where only PyTorch is installed: the program runs under autocast in
`torch_dtype` (fp16 or bf16) and answers in FP32. CPU-target artifacts, and
GPU-target ones on a machine without CUDA, run on the CPU in fp32. On CUDA
each padded input shape is captured into a CUDA graph and replayed
(serve/runtimes/cuda_graphs.py; OPTISERVE_TORCH_CUDA_GRAPHS). torch is imported only
when such an artifact is loaded, so an onnxruntime-only image never needs it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from optimize.manifest import Manifest
from serve.runtimes.cuda_graphs import MAX_GRAPHS, TOKEN_MULTIPLE, GraphedForward, NotCaptured, shapes_needed

log = logging.getLogger(__name__)


def torch_device(target: str, cuda_available: bool) -> str:
    """cuda for GPU-target artifacts where CUDA is available; the CPU otherwise (int8 kernels are CPU kernels)."""
    return "cuda" if target == "gpu" and cuda_available else "cpu"


class TorchModel:
    def __init__(self, manifest: Manifest, model_path: Path, intra_op_threads: int = 1,
                 dtype: str = "float16", text_token_budget: int | None = None, cuda_graphs: bool = True,
                 max_batch_size: int = 32, text_padding_limit: float | None = None) -> None:
        try:
            import torch
        except ImportError:
            raise ValueError(f"{model_path}: a {manifest.runtime} artifact needs PyTorch; expected `pip install "
                             "torch` in the serving environment") from None
        torch.set_num_threads(intra_op_threads)
        self.manifest = manifest
        self._torch = torch
        self._device = torch_device(manifest.target, torch.cuda.is_available())
        self.on_cpu = self._device == "cpu"
        self._dtype = getattr(torch, dtype) if self._device == "cuda" else torch.float32
        self._module = self._load(model_path)
        self.output_names = [spec.name for spec in manifest.outputs]
        self._graphed = None
        if cuda_graphs and self._device == "cuda":
            max_length = manifest.text_input.max_length if manifest.text_input else None
            # room for every shape the calls can take, so none is ever recaptured
            max_graphs = max(MAX_GRAPHS, shapes_needed(max_batch_size, max_length))
            self._graphed = GraphedForward(torch, self._run_module, self._device, max_graphs=max_graphs)
        self._text = None
        if manifest.text_input is not None:
            from serve.runtimes.text import device_text_encoder

            self._text = device_text_encoder(model_path.parent, manifest.text_input, text_token_budget,
                                             text_padding_limit, on_gpu=self._device != "cpu",
                                             token_multiple=TOKEN_MULTIPLE if self._graphed else 1)
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
        graphs = ", CUDA graphs" if self._graphed else ""
        return (f"torch:cuda ({self.manifest.runtime}, {name}, {str(self._dtype).removeprefix('torch.')} autocast"
                f"{graphs})")

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._text is not None:
            texts = inputs[self.manifest.text_input.name]
            return {self.output_names[0]: self._text.run_grouped(texts, lambda feed: self._forward(feed)[0])}
        return dict(zip(self.output_names, self._forward(inputs)))

    def _forward(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        arrays = [feed[spec.name] for spec in self.manifest.inputs]
        graphed = self._graphed
        if graphed is not None and graphed.accepts(arrays[0].shape[0]):
            try:
                return graphed(arrays)
            except NotCaptured:
                pass  # this shape alone runs op by op
            except Exception as error:  # noqa: BLE001 - e.g. host syncs, which a graph cannot hold: never fail the call
                log.warning("%s: CUDA graph capture or replay failed (%s: %s); running op by op from now on",
                            self.manifest.name, type(error).__name__, error)
                self._graphed = None
                if self._text is not None:
                    self._text.pad_tokens_to_multiple_of(1)  # no graphs: padding for fewer shapes is wasted work
                self.execution_provider = self._describe()
        tensors = [self._torch.from_numpy(np.ascontiguousarray(array)).to(self._device) for array in arrays]
        return [output.float().cpu().numpy() for output in self._run_module(tensors)]

    def _run_module(self, tensors: list) -> list:
        """The module on device tensors (autocast's weight cache off: a CUDA graph must not capture it)."""
        torch = self._torch
        autocast = self._dtype != torch.float32
        with torch.no_grad(), torch.autocast(self._device, dtype=self._dtype, enabled=autocast, cache_enabled=False):
            outputs = self._module(*tensors)
        return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
