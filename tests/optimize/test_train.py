"""Training runs repeat: seeded, on a fixed thread count, whatever the caller's RNG and threads.

What a run lands on may differ between CPUs (their kernels round differently), so no test here
asserts an accuracy: only that the same run gives the same weights, and leaves the caller as it was.
"""

from __future__ import annotations

import numpy as np
import pytest

from optimize.train import TRAINING_THREADS, build, fit, repeatable


def weights(module) -> list[np.ndarray]:
    return [tensor.detach().numpy().copy() for tensor in module.state_dict().values()]


def assert_same_weights(first, second) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def digits():
    from optimize.demos.digits import load_split

    return load_split()


def test_a_training_run_repeats_whatever_the_callers_threads_and_random_draws(digits):
    import torch

    from optimize.demos.digits import cnn, train_classifier

    train_x, train_y = digits[0][:512], digits[1][:512]
    threads = torch.get_num_threads()
    runs = []
    try:
        for caller_threads in (1, 3):
            torch.set_num_threads(caller_threads)
            torch.rand(caller_threads)  # a caller's draw from the global RNG must not move the run
            runs.append(weights(train_classifier(train_x, train_y, epochs=2, model=build(cnn))))
            assert torch.get_num_threads() == caller_threads  # the caller's setting is given back
    finally:
        torch.set_num_threads(threads)
    assert_same_weights(*runs)


def test_a_pruned_candidate_built_twice_has_the_same_weights(digits_source, tmp_path):
    """The candidate builders train through optimize.train, so a candidate is repeatable too."""
    import onnx
    from onnx import numpy_helper

    from optimize.candidates import Workspace, pruned
    from optimize.export import export_onnx
    from optimize.kind import Built
    from optimize.settings import OptimizeSettings

    export_onnx(digits_source, tmp_path / "fp32.onnx")
    initializers = []
    for attempt in ("first", "second"):
        (tmp_path / attempt).mkdir()
        workspace = Workspace(digits_source, Built(tmp_path / "fp32.onnx", []), tmp_path / attempt,
                              OptimizeSettings(fine_tune_epochs=2), log=lambda _: None)
        graph = onnx.load(str(pruned(workspace).path)).graph
        initializers.append([numpy_helper.to_array(tensor) for tensor in graph.initializer])
    assert_same_weights(*initializers)


def test_repeatable_seeds_the_global_rng_and_restores_the_callers_state():
    import torch

    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(123)
    expected_after = torch.rand(4)
    torch.manual_seed(123)
    with repeatable(seed=7):
        inside = torch.rand(4)
        assert torch.get_num_threads() == TRAINING_THREADS and torch.are_deterministic_algorithms_enabled()
    with repeatable(seed=7):
        assert torch.equal(torch.rand(4), inside)
    assert torch.equal(torch.rand(4), expected_after)  # the caller's sequence went on as if nothing happened
    assert torch.are_deterministic_algorithms_enabled() is deterministic


def test_batch_order_comes_from_the_seed(digits):
    import torch

    train_x, train_y = digits[0][:256], digits[1][:256]

    def trained(seed: int):
        return weights(fit(build(lambda: torch.nn.Linear(64, 10)), train_x, train_y, 1, 1e-2, "test", seed=seed))

    assert_same_weights(trained(0), trained(0))
    assert not np.array_equal(trained(0)[0], trained(1)[0])
