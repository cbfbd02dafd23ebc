"""An artifact's TensorRT engine, run with TensorRT's own runtime (device buffers from torch).

The engine is refused, with what it was built for and what is here, unless
this machine has the TensorRT version and GPU model that built it
(optimize.manifest.check_engine). Untested on hardware until
scripts/gpu_check.sh has run on a GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optimize.manifest import Manifest, check_engine


class TensorRTModel:
    def __init__(self, artifact_dir: Path, manifest: Manifest) -> None:
        import tensorrt as trt
        import torch

        engine = manifest.tensorrt
        major, minor = torch.cuda.get_device_capability(0)
        check_engine(engine, trt.__version__, torch.cuda.get_device_name(0), f"{major}.{minor}")
        if manifest.text_input is not None:
            raise ValueError(f"{manifest.name}: TensorRT engines are served for tensor inputs only, not text models")
        self.manifest = manifest
        self._torch = torch
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        self._engine = runtime.deserialize_cuda_engine((Path(artifact_dir) / engine.engine_file).read_bytes())
        if self._engine is None:
            raise ValueError(f"{artifact_dir}/{engine.engine_file}: TensorRT could not deserialize the engine")
        self._context = self._engine.create_execution_context()
        self._max_batch = engine.max_batch
        self.output_names = [spec.name for spec in manifest.outputs]
        self.on_cpu = False
        self.execution_provider = f"tensorrt {trt.__version__} engine ({engine.gpu_name}, {'+'.join(engine.precisions)})"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(next(iter(inputs.values())))
        if rows > self._max_batch:  # the engine's profile ends at max_batch: run larger batches in slices
            parts = [self.run({k: v[i : i + self._max_batch] for k, v in inputs.items()})
                     for i in range(0, rows, self._max_batch)]
            return {name: np.concatenate([part[name] for part in parts]) for name in self.output_names}
        return self._execute(inputs)

    def _execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, trt = self._torch, self._trt
        keep = []  # device tensors must outlive the launch
        for spec in self.manifest.inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(inputs[spec.name])).cuda()
            self._context.set_input_shape(spec.name, tuple(tensor.shape))
            self._context.set_tensor_address(spec.name, tensor.data_ptr())
            keep.append(tensor)
        outputs = {}
        for name in self.output_names:
            dtype = torch.from_numpy(np.empty(0, trt.nptype(self._engine.get_tensor_dtype(name)))).dtype
            outputs[name] = torch.empty(tuple(self._context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            self._context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream()  # the stream the input copies were queued on
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.manifest.name}: TensorRT execution failed; see its log")
        stream.synchronize()
        return {name: tensor.float().cpu().numpy() for name, tensor in outputs.items()}
