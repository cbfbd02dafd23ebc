"""Optimizer settings, validated once; every field says what it controls."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OptimizeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPTISERVE_OPTIMIZE_", frozen=True)

    parity_tolerance: float = Field(
        1e-4, gt=0, description="max abs difference allowed between ONNX and PyTorch outputs"
    )
    accuracy_tolerance: float = Field(
        0.01, ge=0, le=1, description="largest absolute top-1 drop a candidate may have vs fp32"
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
    int8_candidates: bool = Field(
        True, description="embedding models: build and measure int8 candidates (off: ship fp32 at once)"
    )
    quantize_per_channel: bool = Field(False, description="int8: one scale per output channel")
    quantize_reduce_range: bool = Field(False, description="int8: 7-bit weights (for CPUs without VNNI)")
