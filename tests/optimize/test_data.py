import numpy as np
import pytest

from optimize.data import check_fits, clean, load_arrays


def test_nonfinite_and_duplicate_rows_are_dropped_and_counted():
    inputs = np.array([[1, 2], [np.nan, 0], [1, 2], [3, np.inf], [4, 5], [4, 5]], dtype=np.float32)
    labels = np.array([0, 1, 0, 1, 2, 2])
    data = clean(inputs, labels)
    assert data.inputs.tolist() == [[1, 2], [4, 5]] and data.labels.tolist() == [0, 2]
    assert (data.dropped_nonfinite, data.dropped_duplicates) == (2, 2)
    assert "2 rows kept; dropped 2 with NaN/Inf and 2 exact duplicates" == data.describe()


def test_labels_must_match_rows():
    with pytest.raises(ValueError, match="expected one label per input row, got 1 labels for 2 rows"):
        clean(np.zeros((2, 3), np.float32), np.array([1]))


def test_npz_and_npy_files_load(tmp_path):
    np.savez(tmp_path / "val.npz", x=np.ones((3, 4), np.float32), y=np.arange(3))
    np.save(tmp_path / "cal.npy", np.zeros((5, 4), np.float32))
    inputs, labels = load_arrays(str(tmp_path / "val.npz"))
    assert inputs.shape == (3, 4) and labels.tolist() == [0, 1, 2]
    inputs, labels = load_arrays(str(tmp_path / "cal.npy"))
    assert inputs.shape == (5, 4) and labels is None


def test_an_npz_without_inputs_names_what_it_expected(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.ones((3, 4)))
    with pytest.raises(ValueError, match="expected an array named one of inputs, x, X, found images"):
        load_arrays(str(tmp_path / "bad.npz"))


def test_a_callable_can_provide_the_data():
    inputs, labels = load_arrays("optimize.demos.digits:load_split")
    assert inputs.ndim == 2 and labels is not None


@pytest.mark.parametrize("inputs, expected", [
    (np.zeros((2, 65), np.float32), r"model expects shape \[-1, 64\], data has \[2, 65\]"),
    (np.zeros((2, 64), np.float64), "model expects dtype float32, data has float64"),
])
def test_data_that_does_not_fit_the_model_names_both(inputs, expected):
    with pytest.raises(ValueError, match=expected):
        check_fits(inputs, "input", (-1, 64), np.float32)
