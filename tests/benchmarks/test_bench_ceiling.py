"""The in-process ceiling of `make bench` tries every batching, length-sorted groups of text included."""


def test_the_ceiling_tries_length_sorted_groups_for_text(minilm_artifact, monkeypatch):
    from benchmarks import bench

    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)  # the strategies that split rows across cores
    monkeypatch.setenv("PEER_ARTIFACT", str(minilm_artifact))
    result = bench.ceiling("minilm", minilm_artifact, concurrency=4, seconds=0.5)
    assert set(result["strategies"]) == {"batch", "batch, 1 thread", "split", "rows", "sorted"}
    assert all(rows_per_s > 0 for rows_per_s in result["strategies"].values())
    assert result["strategy"] in result["strategies"]
