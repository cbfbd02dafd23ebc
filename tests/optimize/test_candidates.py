"""Pruning, static quantization and distillation candidates, and how the optimizer chooses among them."""

from pathlib import Path

import numpy as np
import pytest

from optimize.candidates import BUILDERS
from optimize.manifest import Candidate, Measurement, load_verified
from optimize.pipeline import choose_candidate
from optimize.prune import count_parameters, magnitude_prune, structured_prune, weight_sparsity
from optimize.settings import CANDIDATES, GPU_CANDIDATES, OptimizeSettings


def test_every_candidate_name_has_a_builder():
    assert set(BUILDERS) == set(CANDIDATES)


def test_structured_pruning_removes_half_the_hidden_units_and_keeps_the_interface():
    import torch

    from optimize.demo_digits import cnn, mlp

    for model in (mlp(), cnn()):
        smaller = structured_prune(model, 0.5)
        assert count_parameters(smaller) < 0.45 * count_parameters(model)
        inputs = torch.rand(3, 64)
        assert smaller(inputs).shape == model(inputs).shape == (3, 10)
    assert [layer.out_channels for layer in structured_prune(cnn(), 0.5) if isinstance(layer, torch.nn.Conv2d)] \
        == [16, 32, 32]


def test_structured_pruning_keeps_the_strongest_units():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, 0.1], [5.0, 5.0], [0.2, 0.0], [3.0, -3.0]]))
        model[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    smaller = structured_prune(model, 0.5)
    assert smaller[0].weight.tolist() == [[5.0, 5.0], [3.0, -3.0]]
    assert smaller[2].weight.tolist() == [[2.0, 4.0]]  # the next layer loses the matching inputs


def test_magnitude_pruning_reaches_the_sparsity_and_makes_it_permanent():
    from optimize.demo_digits import mlp

    model, sparsity = magnitude_prune(mlp(), 0.75, fine_tune=lambda module: module)
    assert sparsity == pytest.approx(0.75, abs=0.01) and weight_sparsity(model) == sparsity
    assert not any(name.endswith("_orig") for name, _ in model.named_parameters())


def measured(ms: float, deviation: float, accuracy: float = 0.97) -> Measurement:
    return Measurement(accuracy=accuracy, latency_ms={1: ms, 32: ms * 10}, size_bytes=1, batch_deviation=deviation)


CHOICES = [
    Candidate(name="fp32", measurement=measured(1.0, 0.0), accepted=True, reason="baseline"),
    Candidate(name="int8_dynamic", measurement=measured(0.4, 0.02), accepted=True, reason="ok"),
    Candidate(name="int8_static", measurement=measured(0.6, 0.0), accepted=True, reason="ok"),
    Candidate(name="pruned", measurement=measured(0.1, 0.0), accepted=False, reason="accuracy"),
]


def test_in_auto_mode_batch_invariant_candidates_win_unless_deviation_is_accepted():
    auto = OptimizeSettings(auto=True)
    assert choose_candidate(CHOICES, auto, log=lambda _: None) == "int8_static"
    assert choose_candidate(CHOICES[:2], auto, log=lambda _: None) == "fp32"
    accepting = OptimizeSettings(auto=True, accept_batch_deviation=True)
    assert choose_candidate(CHOICES, accepting, log=lambda _: None) == "int8_dynamic"


def test_candidates_named_by_the_user_compete_on_speed_alone():
    assert choose_candidate(CHOICES, OptimizeSettings(), log=lambda _: None) == "int8_dynamic"


@pytest.fixture(scope="module")
def cnn_artifact(tmp_path_factory) -> Path:
    from optimize.demo_digits import trained_digits_cnn
    from optimize.pipeline import optimize_model

    artifact = tmp_path_factory.mktemp("artifacts") / "digits-cnn"
    settings = OptimizeSettings(auto=True, latency_repeats=10, distill_epochs=10, serving_max_batch_size=16)
    optimize_model(trained_digits_cnn(), artifact, settings, log=lambda _: None)
    return artifact


def test_auto_mode_builds_and_measures_every_candidate_at_every_batch_size(cnn_artifact):
    manifest, _ = load_verified(cnn_artifact)
    # GPU-target variants (fp16) are never built for a CPU target: their CPU latency says nothing about GPUs
    assert [c.name for c in manifest.candidates] == ["fp32", *(c for c in CANDIDATES if c not in GPU_CANDIDATES)]
    for candidate in manifest.candidates:
        assert sorted(candidate.measurement.latency_ms) == [1, 2, 4, 8, 16]
    shipped = [c for c in manifest.candidates if c.measurement == manifest.after]
    assert shipped and shipped[0].accepted


def test_static_int8_and_structured_pruning_hold_accuracy_on_the_cnn(cnn_artifact):
    manifest, _ = load_verified(cnn_artifact)
    by_name = {c.name: c.measurement for c in manifest.candidates}
    baseline = by_name["fp32"].accuracy
    assert baseline > 0.95
    for name in ("int8_static", "pruned", "pruned_int8_static"):
        assert baseline - by_name[name].accuracy <= 0.01, name
        assert by_name[name].batch_deviation < 1e-4, f"{name}: fixed scales must not depend on the batch"
    assert by_name["pruned"].size_bytes < 0.5 * by_name["fp32"].size_bytes


def test_unstructured_zeros_are_reported_as_compressed_size_only(cnn_artifact):
    manifest, _ = load_verified(cnn_artifact)
    candidates = {c.name: c for c in manifest.candidates}
    sparse = candidates["sparse"]
    assert sparse.measurement.size_bytes >= 0.95 * candidates["fp32"].measurement.size_bytes  # zeros stored densely
    step = next(step for step in sparse.steps if step.name == "prune_magnitude")
    assert step.settings["measured_sparsity"] == pytest.approx(0.75, abs=0.01)
    assert step.settings["gzip_bytes_sparse"] < 0.6 * step.settings["gzip_bytes_dense"]
    assert "no speedup" in step.settings["note"]
