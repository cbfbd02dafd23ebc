"""Shared fixtures: the real digits demo model, trained and optimized once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_source():
    from optimize.demos.digits import trained_digits_classifier

    return trained_digits_classifier()


@pytest.fixture(scope="session")
def digits_artifact(tmp_path_factory, digits_source) -> Path:
    from optimize.pipeline import optimize_model
    from optimize.settings import OptimizeSettings

    artifact = tmp_path_factory.mktemp("artifacts") / "digits"
    optimize_model(digits_source, artifact, OptimizeSettings(latency_repeats=30))
    return artifact


@pytest.fixture(scope="session")
def minilm_artifact(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 exported with pooling and normalization; fp32 only (the int8 guard has its own test)."""
    from optimize.demos.minilm import minilm_source
    from optimize.pipeline import optimize_model
    from optimize.settings import OptimizeSettings

    artifact = tmp_path_factory.mktemp("artifacts") / "minilm"
    settings = OptimizeSettings(latency_repeats=10, int8_candidates=False)
    optimize_model(minilm_source(validation_count=64), artifact, settings)
    return artifact
