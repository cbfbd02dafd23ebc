"""Optimizer settings, validated once; every field says what it controls."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


CANDIDATES = (
    "int8_dynamic", "int8_per_row", "int8_static", "pruned", "pruned_int8_static", "sparse", "distilled",
    "torch_int8_static", "fp16", "tflite_fp32", "tflite_dynamic_int8", "tflite_int8",
)
# Variants whose speed on a dense runtime is fp32's by construction (unstructured zeros run at full cost): they
# never ship on speed; their gain is a smaller compressed file only.
NO_SPEEDUP_CANDIDATES = ("sparse",)
# Variants made for GPUs: never built in CPU auto mode (their CPU latency says nothing about GPU speed).
GPU_CANDIDATES = ("fp16",)
# Variants whose kernels are CPU kernels (onnxruntime int8, PyTorch fbgemm/qnnpack): not for GPU targets.
CPU_ONLY_CANDIDATES = ("int8_dynamic", "int8_per_row", "int8_static", "pruned_int8_static", "torch_int8_static",
                       "tflite_fp32", "tflite_dynamic_int8", "tflite_int8")


class OptimizeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPTISERVE_OPTIMIZE_", frozen=True)

    parity_tolerance: float = Field(
        1e-4, gt=0, description="max abs difference allowed between ONNX and PyTorch outputs"
    )
    accuracy_tolerance: float = Field(
        0.01, ge=0, le=1, description="largest drop of the score (top-1, or the source's metric) a candidate may "
        "have vs fp32: absolute, or a fraction of the fp32 score with accuracy_tolerance_relative"
    )
    accuracy_tolerance_relative: bool = Field(
        False, description="read accuracy_tolerance as a fraction of the fp32 score (0.01: lose at most 1% of it)"
    )
    cosine_mean_at_least: float = Field(
        0.99, ge=0, le=1, description="embedding models: least mean cosine to the fp32 embeddings a candidate may have"
    )
    cosine_worst_at_least: float = Field(
        0.98, ge=0, le=1, description="embedding models: least cosine to fp32 for any single held-out sentence"
    )
    latency_batch_sizes: tuple[int, ...] = Field(
        (1, 32), min_length=1, description="batch sizes at which latency is measured"
    )
    latency_repeats: int = Field(
        200, ge=10, description="timed runs per model and batch size (medians are reported)"
    )
    min_speedup: float = Field(
        0.05, ge=0, lt=1, description="CPU target: a candidate counts as faster than fp32 only if its latency "
        "relative to fp32 (geometric mean over batch sizes) is at most 1 - min_speedup in the median block of "
        "interleaved runs and below 1 in every block; level candidates do not ship",
    )
    timing_blocks: int = Field(
        5, ge=2, le=50, description="blocks the interleaved runs at each batch size are cut into, to see the spread "
        "of a candidate's latency relative to fp32 (slower: above 1 in every block)",
    )
    clearly_slower: float = Field(
        1.5, gt=1, description="CPU target: a candidate whose median latency is more than this multiple of fp32's "
        "after the first block of runs at any batch size is rejected and timed no further",
    )
    timing_threads: int = Field(
        1, ge=1, description="threads each candidate runs on while it is timed (onnxruntime intra-op, LiteRT): "
        "the server's intra_op_threads, one per replica by default, so a candidate is chosen at the speed it "
        "serves at",
    )
    int8_candidates: bool = Field(
        True, description="embedding models: build and measure int8 candidates (off: ship fp32 at once)"
    )
    candidates: tuple[str, ...] = Field(
        ("int8_dynamic",), description="candidates to build besides fp32: int8_dynamic, int8_per_row, int8_static, "
        "pruned, pruned_int8_static, sparse, distilled, torch_int8_static, fp16, and on LiteRT tflite_fp32, "
        "tflite_dynamic_int8, tflite_int8 (see optimize/candidates.py)",
    )
    auto: bool = Field(
        False, description="build every candidate that applies, time each at batch sizes 1..serving_max_batch_size, "
        "ship the fastest within tolerance that is faster than fp32 beyond the measured spread (min_speedup)",
    )
    target: Literal["cpu", "gpu"] = Field(
        "cpu", description="device the artifact is for: cpu (candidates timed on this CPU) or gpu (fp16 judged on "
        "accuracy only, plus a TensorRT engine where TensorRT and a GPU are present)",
    )
    gpu_runtime: Literal["onnxruntime", "torch"] = Field(
        "onnxruntime", description="GPU target: ship an fp16 ONNX model (onnxruntime CUDA/TensorRT) or a "
        "torch.export program (PyTorch on CUDA under fp16/bf16 autocast)",
    )
    tensorrt_engine: bool = Field(
        True, description="GPU target: also build a TensorRT engine (fp16 + int8, batch 1..serving_max_batch_size) "
        "where the tensorrt package and a CUDA GPU are present",
    )
    serving_max_batch_size: int = Field(32, ge=1, description="largest batch the server will run (auto mode)")
    accept_batch_deviation: bool = Field(
        False, description="auto mode: let a candidate whose answers move with their batch (dynamic int8) win "
        "over a batch-invariant one",
    )
    batch_invariant_below: float = Field(
        1e-4, gt=0, description="a candidate whose batch deviation is under this counts as batch-invariant"
    )
    calibration_method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="static int8: how activation ranges are chosen from calibration data"
    )
    torch_backend: Literal["x86", "fbgemm", "qnnpack"] = Field(
        "x86", description="PyTorch static int8: kernel backend (x86/fbgemm for Intel and AMD, qnnpack for ARM)"
    )
    static_per_channel: bool = Field(True, description="static int8: one weight scale per output channel")
    prune_ratio: float = Field(
        0.5, gt=0, lt=1, description="structured pruning: share of each coupled group's channels removed (hidden "
        "units, conv channels, attention head dims), with the layers that depend on them (torch-pruning)",
    )
    sparsity: float = Field(0.75, gt=0, lt=1, description="magnitude pruning: share of weights zeroed")
    fine_tune_epochs: int = Field(10, ge=0, description="epochs of fine-tuning after pruning")
    fine_tune_lr: float = Field(1e-3, gt=0, description="learning rate for fine-tuning")
    student_ratio: float = Field(
        0.75, gt=0, lt=1, description="distillation: share of each coupled group's channels the default student "
        "(the teacher structurally pruned) lacks"
    )
    distill_temperature: float = Field(4.0, gt=0, description="distillation: softmax temperature")
    distill_alpha: float = Field(0.7, ge=0, le=1, description="distillation: weight of the soft-target loss")
    distill_epochs: int = Field(30, ge=1, description="distillation: training epochs")
    quantize_per_channel: bool = Field(False, description="int8: one scale per output channel")
    quantize_reduce_range: bool = Field(False, description="int8: 7-bit weights (for CPUs without VNNI)")
    quantize_weight_type: Literal["qint8", "quint8"] = Field(
        "qint8", description="dynamic int8 weights, signed or unsigned: measure both on the target CPU "
        "(all-MiniLM-L6-v2 per-channel on an AVX2 CPU without VNNI: QUInt8 1.24x fp32, QInt8 1.0x)",
    )

    @field_validator("candidates")
    @classmethod
    def _known_candidates(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in names if name not in CANDIDATES]
        if unknown:
            raise ValueError(f"unknown candidate(s) {', '.join(unknown)}; expected any of {', '.join(CANDIDATES)}")
        return names

    @model_validator(mode="after")
    def _gpu_candidates_only(self) -> "OptimizeSettings":
        cpu_only = [name for name in self.candidates if name in CPU_ONLY_CANDIDATES]
        if self.target == "gpu" and "candidates" in self.model_fields_set and cpu_only:
            raise ValueError(f"target gpu: {', '.join(cpu_only)} run on CPU kernels; expected GPU-capable "
                             f"candidates ({', '.join(c for c in CANDIDATES if c not in CPU_ONLY_CANDIDATES)})")
        return self

    @property
    def planned_candidates(self) -> tuple[str, ...]:
        """What gets built besides fp32: auto mode builds all for the target; a GPU target defaults to fp16."""
        if self.target == "gpu":
            named = self.candidates if "candidates" in self.model_fields_set and not self.auto else ()
            own = GPU_CANDIDATES if self.gpu_runtime == "onnxruntime" else ()  # the torch runtime ships the module
            return (*own, *(name for name in named if name not in own))
        if self.auto:
            return tuple(name for name in CANDIDATES if name not in GPU_CANDIDATES)
        return self.candidates

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Auto mode: powers of two from 1 to the serving maximum (and the maximum itself)."""
        if not self.auto:
            return self.latency_batch_sizes
        return self.serving_batch_sizes

    @property
    def serving_batch_sizes(self) -> tuple[int, ...]:
        """Powers of two from 1 below serving_max_batch_size, and the maximum itself."""
        largest = self.serving_max_batch_size
        sizes = [1 << k for k in range(largest.bit_length()) if 1 << k < largest]
        return (*sizes, largest)
