"""An artifact loaded into its runtime, verified against its manifest (and tokenizer) first.

ONNX artifacts run on onnxruntime with the execution providers
serve/runtimes/providers.py chooses (TensorRT, CUDA, CPU for GPU-target artifacts; CPU
otherwise); on a GPU provider inputs and outputs go through IO binding. PyTorch artifacts run on
serve/runtimes/torch_model.py, LiteRT (.tflite) ones on serve/runtimes/litert_model.py.
Every model object says what runs it in `execution_provider`.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from optimize.manifest import Manifest, load_verified
from serve.runtimes.providers import CPU, TENSORRT, choose_providers, gpu_present, tensorrt_installed, tensorrt_profile
from serve.settings import ServeSettings
from serve.runtimes.text import device_text_encoder

# Under Ray's `ray.serve` logger, whose handlers write the replica logs; at INFO of its own, since model replicas run
# `ray.serve` itself at WARNING (ServeSettings.replica_log_level): the runtime each model got stays in the log.
logger = logging.getLogger("ray.serve.optiserve")
logger.setLevel(logging.INFO)


def load_model(artifact_dir: Path, intra_op_threads: int = 1, settings: ServeSettings | None = None):
    """Verify the artifact, then load it with the runtime its manifest names (settings: OPTISERVE_* if not given)."""
    settings = settings or ServeSettings()
    manifest, model_path = load_verified(Path(artifact_dir))
    if manifest.runtime in ("torchscript", "torch_export"):
        from serve.runtimes.torch_model import TorchModel

        model = TorchModel(manifest, model_path, intra_op_threads, settings.torch_dtype, settings.text_token_budget,
                           settings.torch_cuda_graphs, settings.max_batch_size, settings.text_padding_limit)
    elif manifest.runtime == "litert":
        from serve.runtimes.litert_model import LiteRTModel

        model = LiteRTModel(manifest, model_path, intra_op_threads)
    elif _engine_wanted(manifest, settings):
        from serve.runtimes.tensorrt_model import TensorRTModel

        model = TensorRTModel(Path(artifact_dir), manifest)
    else:
        model = OnnxModel(Path(artifact_dir), manifest, intra_op_threads, settings.max_batch_size,
                          settings.text_token_budget, settings.text_padding_limit)
    logger.info("%s %s: %s runtime on %s", manifest.name, manifest.version, manifest.runtime, model.execution_provider)
    return model


def _engine_wanted(manifest: Manifest, settings: ServeSettings) -> bool:
    if manifest.tensorrt is None or not settings.tensorrt_engine:
        return False
    missing = [name for name in ("tensorrt", "torch") if importlib.util.find_spec(name) is None]
    if missing or not gpu_present():
        why = f"{', '.join(missing)} not installed" if missing else "no GPU present"
        logger.warning("%s: TensorRT engine not used (%s); serving its ONNX model on onnxruntime", manifest.name, why)
        return False
    return True


class OnnxModel:
    def __init__(self, artifact_dir: Path, manifest: Manifest, intra_op_threads: int = 1,
                 max_batch_size: int = 32, text_token_budget: int | None = None,
                 text_padding_limit: float | None = None) -> None:
        """`manifest`: the artifact's, already verified (load_model verifies before it chooses a runtime)."""
        self.manifest = manifest
        model_path = Path(artifact_dir) / manifest.model_file
        if self.manifest.runtime != "onnxruntime":
            raise ValueError(f"{artifact_dir}: expected runtime onnxruntime, manifest says {self.manifest.runtime}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = choose_providers(self.manifest.target, ort.get_available_providers(), gpu_present(),
                                     tensorrt_installed())
        self._session = ort.InferenceSession(
            str(model_path), options, providers=[self._configured(p, max_batch_size) for p in providers])
        self.execution_provider = self._session.get_providers()[0]
        self._bound = self.execution_provider != CPU  # IO binding on GPU providers
        self.on_cpu = not self._bound
        if self.manifest.target == "gpu" and not self._bound:
            logger.warning("%s targets a GPU but runs on the CPU (no GPU or GPU provider here): expect it slow",
                           self.manifest.name)
        self.output_names = [o.name for o in self._session.get_outputs()]
        text = self.manifest.text_input
        self._text = device_text_encoder(Path(artifact_dir), text, text_token_budget, text_padding_limit,
                                         on_gpu=self._bound) if text else None

    def _configured(self, provider: str, max_batch_size: int):
        """TensorRT provider: fp16, engine and timing caches, one profile for batch 1..max_batch_size."""
        if provider != TENSORRT:
            return provider
        cache = Path(tempfile.gettempdir()) / "optiserve-trt-cache" / self.manifest.sha256[:16]
        cache.mkdir(parents=True, exist_ok=True)
        max_length = self.manifest.text_input.max_length if self.manifest.text_input else None
        return (provider, {
            "trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
            **tensorrt_profile(self.manifest.inputs, max_batch_size, max_length),
        })

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run every output for a batch of request inputs (strings are tokenized first)."""
        if self._text is not None:
            if len(self.output_names) != 1:
                raise ValueError(f"text models: expected one output, {self.manifest.name} has {self.output_names}")
            texts = inputs[self.manifest.text_input.name]
            return {self.output_names[0]: self._text.run_grouped(texts, lambda feed: self._infer(feed)[0])}
        return dict(zip(self.output_names, self._infer(inputs)))

    def _infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if not self._bound:
            return self._session.run(self.output_names, feed)
        binding = self._session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self.output_names:
            binding.bind_output(name)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()
