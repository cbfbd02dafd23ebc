"""Pruning, static quantization and distillation candidates, and how the optimizer chooses among them.

Structured pruning itself (torch-pruning on residual CNNs, attention blocks, models it cannot prune) is
tested in test_prune.py.
"""

from pathlib import Path

import numpy as np
import pytest

from optimize import measure
from optimize.candidates import BUILDERS
from optimize.manifest import Candidate, load_verified
from optimize.prune import magnitude_prune, weight_sparsity
from optimize.settings import CANDIDATES, GPU_CANDIDATES, OptimizeSettings


def test_every_candidate_name_has_a_builder():
    assert set(BUILDERS) == set(CANDIDATES)


def test_magnitude_pruning_reaches_the_sparsity_and_makes_it_permanent():
    from optimize.demos.digits import mlp

    model, sparsity = magnitude_prune(mlp(), 0.75, fine_tune=lambda module: module)
    assert sparsity == pytest.approx(0.75, abs=0.01) and weight_sparsity(model) == sparsity
    assert not any(name.endswith("_orig") for name, _ in model.named_parameters())


CNN_SETTINGS = OptimizeSettings(auto=True, latency_repeats=10, distill_epochs=10, serving_max_batch_size=16)


@pytest.fixture(scope="module")
def cnn_artifact(tmp_path_factory) -> Path:
    from optimize.demos.digits import trained_digits_cnn
    from optimize.pipeline import optimize_model

    artifact = tmp_path_factory.mktemp("artifacts") / "digits-cnn"
    optimize_model(trained_digits_cnn(), artifact, CNN_SETTINGS, log=lambda _: None)
    return artifact


def shipped_candidate(manifest) -> Candidate:
    (shipped,) = [c for c in manifest.candidates if c.measurement == manifest.after]
    return shipped


def test_auto_mode_builds_and_measures_every_candidate_at_every_batch_size(cnn_artifact):
    manifest, _ = load_verified(cnn_artifact)
    # GPU-target variants (fp16) are never built for a CPU target: their CPU latency says nothing about GPUs
    assert [c.name for c in manifest.candidates] == ["fp32", *(c for c in CANDIDATES if c not in GPU_CANDIDATES)]
    for candidate in manifest.candidates:
        timed = sorted(candidate.measurement.latency_ms)
        if "clearly slower" in candidate.reason:  # timed no further once clearly slower: a first stretch only
            assert timed and timed == [1, 2, 4, 8, 16][:len(timed)] and not candidate.accepted, candidate.name
        else:
            assert timed == [1, 2, 4, 8, 16], candidate.name
    # a sanity check with a wide margin: a working classifier, not chance (0.1); ~0.98 on AMD EPYC with and without VNNI
    assert manifest.before.accuracy > 0.9


def test_the_shipped_cnn_candidate_is_accepted_within_tolerance_and_faster_beyond_the_spread(cnn_artifact):
    """Which candidate wins depends on this CPU's kernels and timings; that the winner keeps its promises does not."""
    manifest, _ = load_verified(cnn_artifact)
    shipped = shipped_candidate(manifest)
    assert shipped.accepted
    assert manifest.before.accuracy - manifest.after.accuracy <= CNN_SETTINGS.accuracy_tolerance
    if shipped.name != "fp32":
        assert manifest.after.relative_latency <= 1 - CNN_SETTINGS.min_speedup
        assert manifest.after.relative_latency_range[1] < 1
        assert "faster than fp32" in shipped.reason
    assert tuple(manifest.steps) == tuple(shipped.steps)  # the artifact is the shipped candidate's model


def test_every_cnn_verdict_follows_from_its_measured_drop_and_the_tolerance(cnn_artifact):
    """However far each candidate landed on this CPU, its verdict and reason name the drop and the tolerance."""
    manifest, _ = load_verified(cnn_artifact)
    fp32, tolerance = manifest.before, CNN_SETTINGS.accuracy_tolerance
    for candidate in manifest.candidates[1:]:
        drop = fp32.accuracy - candidate.measurement.accuracy
        if drop > tolerance:
            assert not candidate.accepted
            assert candidate.reason == f"top-1 drop {drop:.4f} exceeds tolerance {tolerance}", candidate.name
            continue
        held = (f"top-1 rose {-drop:.4f} above fp32's, beyond the tolerance {tolerance}: fine-tuning, not "
                "compression" if -drop > tolerance else f"top-1 drop {drop:.4f} within {tolerance}")
        assert candidate.reason.startswith(held), (candidate.name, candidate.reason)
        measured = candidate.measurement
        faster = (candidate.name != "sparse" and measured.relative_latency <= 1 - CNN_SETTINGS.min_speedup
                  and measured.relative_latency_range[1] < 1)
        if candidate.accepted:  # accepted only when faster beyond the spread; rejected for a reason it names
            assert faster and "faster than fp32" in candidate.reason, candidate.name
        else:
            assert any(why in candidate.reason for why in ("slower than fp32", "not faster than fp32",
                                                           "unstructured zeros")), candidate.reason


def test_fixed_scales_are_batch_invariant_and_structured_pruning_shrinks_the_cnn(cnn_artifact):
    """What holds by construction, wherever training and calibration land."""
    manifest, _ = load_verified(cnn_artifact)
    by_name = {c.name: c.measurement for c in manifest.candidates}
    for name in ("int8_static", "pruned", "pruned_int8_static"):
        assert by_name[name].batch_deviation < 1e-4, f"{name}: fixed scales must not depend on the batch"
    assert by_name["pruned"].size_bytes < 0.5 * by_name["fp32"].size_bytes
    assert by_name["pruned_int8_static"].size_bytes < by_name["pruned"].size_bytes


def twin_logits_source():
    """A model no int8 weight can represent: logit 1 is logit 0 times 1.001 (every weight 0.5 vs 0.5005, inputs
    positive), so fp32 answers class 1 for every input and scores 1.0. Dynamic int8 with one weight scale per
    tensor rounds both rows to 127, the logits tie exactly and argmax answers class 0: top-1 0.0, by
    construction and on any CPU."""
    import torch

    from optimize.source import ModelSource

    layer = torch.nn.Linear(64, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5] * 64, [0.5005] * 64]))
    inputs = np.random.default_rng(0).uniform(0.1, 1.0, (64, 64)).astype(np.float32)
    return ModelSource(name="twins", version="1", module=torch.nn.Sequential(layer).eval(),
                       example_input=inputs[:8], validation_inputs=inputs, validation_labels=np.ones(64, np.int64))


def test_a_candidate_beyond_tolerance_is_rejected_with_its_reason_and_never_ships(tmp_path):
    from optimize.pipeline import optimize_model

    settings = OptimizeSettings(candidates=("int8_dynamic",), latency_repeats=10)
    manifest = optimize_model(twin_logits_source(), tmp_path, settings, log=lambda _: None)
    fp32, int8 = manifest.candidates
    assert (fp32.measurement.accuracy, int8.measurement.accuracy) == (1.0, 0.0)
    assert not int8.accepted and int8.reason == "top-1 drop 1.0000 exceeds tolerance 0.01"
    assert manifest.after == fp32.measurement and [step.name for step in manifest.steps] == ["export_onnx"]
    session = measure.open_session(tmp_path / manifest.model_file)
    assert (measure.run(session, twin_logits_source().validation_inputs).argmax(axis=1) == 1).all()


def test_unstructured_zeros_are_reported_as_compressed_size_only(cnn_artifact):
    manifest, _ = load_verified(cnn_artifact)
    candidates = {c.name: c for c in manifest.candidates}
    sparse = candidates["sparse"]
    assert sparse.measurement.size_bytes >= 0.95 * candidates["fp32"].measurement.size_bytes  # zeros stored densely
    step = next(step for step in sparse.steps if step.name == "prune_magnitude")
    assert step.settings["measured_sparsity"] == pytest.approx(0.75, abs=0.01)
    assert step.settings["gzip_bytes_sparse"] < 0.6 * step.settings["gzip_bytes_dense"]
    assert "no speedup" in step.settings["note"]
