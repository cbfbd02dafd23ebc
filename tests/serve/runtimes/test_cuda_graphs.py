"""The shape logic of CUDA graph replay (serve/runtimes/cuda_graphs.py); replay itself is checked on CUDA in
tests/serve/test_model_gpu.py and scripts/gpu_check.py."""

import numpy as np
import pytest

from serve.runtimes.cuda_graphs import MAX_GRAPHS, pad_rows, padded_rows, shapes_needed


@pytest.mark.parametrize("rows, expected", [(1, 1), (2, 2), (3, 4), (5, 8), (64, 64), (65, 128), (1000, 1024)])
def test_batches_are_captured_at_the_next_power_of_two(rows, expected):
    assert padded_rows(rows) == expected


def test_an_empty_batch_is_refused_with_what_was_expected():
    with pytest.raises(ValueError, match="at least one row"):
        padded_rows(0)


def test_padding_appends_zero_rows_and_keeps_the_rows_and_dtype():
    rows = np.arange(6, dtype=np.int64).reshape(3, 2) + 1
    padded = pad_rows(rows, 4)
    assert padded.shape == (4, 2) and padded.dtype == np.int64
    np.testing.assert_array_equal(padded[:3], rows)
    assert not padded[3].any()


def test_a_full_batch_is_not_copied_into_a_new_shape():
    rows = np.ones((4, 3), dtype=np.float32)
    assert pad_rows(rows, 4).shape == (4, 3)


def test_a_graph_cache_without_room_is_refused_with_what_was_expected():
    torch = pytest.importorskip("torch", reason="GraphedForward is built with torch")
    from serve.runtimes.cuda_graphs import GraphedForward

    with pytest.raises(ValueError, match="max_graphs and max_rows of at least 1"):
        GraphedForward(torch, lambda tensors: tensors, max_graphs=0)


@pytest.mark.parametrize("max_batch, max_length, expected", [
    (1, None, 1), (32, None, 6), (33, None, 7), (32, 256, 6 * 8), (256, 256, 9 * 8), (32, 250, 6 * 8), (4, 20, 3),
])
def test_the_shapes_a_model_can_take_are_batch_sizes_times_token_lengths(max_batch, max_length, expected):
    assert shapes_needed(max_batch, max_length) == expected


def test_the_default_graph_cache_holds_every_minilm_shape_at_the_default_batch_but_not_at_256():
    assert shapes_needed(32, 256) <= MAX_GRAPHS < shapes_needed(256, 256)
