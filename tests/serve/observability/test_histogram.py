"""LocalHistogram: Prometheus bucket semantics (value <= le), cumulative counts, exact sums, per label values."""

import pytest

from serve.observability.histogram import LocalHistogram, le_label


def test_each_value_lands_in_the_first_bucket_whose_bound_is_at_least_it_and_counts_are_cumulative():
    histogram = LocalHistogram([1, 2, 4])
    for value in (0.5, 1, 1.5, 2, 3, 4, 9):
        histogram.observe(value)
    [(extra, buckets, count, total)] = list(histogram.changed())
    assert extra == ()
    assert buckets == [("1.0", 2), ("2.0", 4), ("4.0", 6), ("+Inf", 7)]
    assert count == 7 and total == pytest.approx(21.0)  # exact, not bucket midpoints


def test_series_are_kept_per_label_values_and_only_changed_ones_are_reported():
    histogram = LocalHistogram([0.01, 0.1])
    histogram.observe(0.005, ("miss",))
    histogram.observe(0.05, ("hit",))
    assert {extra for extra, *_ in histogram.changed()} == {("miss",), ("hit",)}
    assert list(histogram.changed()) == []  # nothing observed since
    histogram.observe(0.5, ("miss",))
    [(extra, buckets, count, total)] = list(histogram.changed())
    assert extra == ("miss",) and buckets == [("0.01", 1), ("0.1", 1), ("+Inf", 2)]  # since the start
    assert count == 2 and total == pytest.approx(0.505)


@pytest.mark.parametrize("bounds", [[], [2, 1], [1, 1]])
def test_bounds_must_increase(bounds):
    with pytest.raises(ValueError, match="increasing"):
        LocalHistogram(bounds)


def test_le_labels_read_as_prometheus_clients_write_them():
    assert [le_label(b) for b in (1, 0.005, 0.00025, float("inf"))] == ["1.0", "0.005", "0.00025", "+Inf"]
