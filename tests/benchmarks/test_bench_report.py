"""The peer report's judgement: medians decide, and repeats that disagree with the median are not hidden."""

from benchmarks.bench_report import model_table, verdict

LABELS = {"optiserve": "optiserve", "fastapi": "FastAPI + uvicorn"}


def cell(rps_each: list[int]) -> dict:
    ordered = sorted(rps_each)
    return {"rps": ordered[len(ordered) // 2], "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0, "rps_each": rps_each}


def test_a_median_verdict_that_not_every_repeat_agrees_with_says_so():
    cells = {"optiserve": {32: cell([3000, 3100, 3200])}, "fastapi": {32: cell([2100, 4500, 2200])}}
    line = verdict("digits", cells, LABELS, [32])[0]
    assert "ahead of the best peer (FastAPI + uvicorn, 2,200 req/s)" in line
    assert line.endswith("repeat by repeat, **ahead in 2 of 3**")


def test_a_verdict_every_repeat_agrees_with_carries_no_caveat():
    ahead = {"optiserve": {8: cell([3000, 3100, 3200])}, "fastapi": {8: cell([2900, 2100, 2000])}}
    behind = {"optiserve": {8: cell([1000, 1100, 1200])}, "fastapi": {8: cell([2000, 2100, 2900])}}
    assert "repeat by repeat" not in verdict("digits", ahead, LABELS, [8])[0]
    line = verdict("digits", behind, LABELS, [8])[0]
    assert "**behind**" in line and "repeat by repeat" not in line


def test_the_table_lists_every_repeat():
    cells = {"optiserve": {32: cell([3000, 3100, 3200])}, "fastapi": {32: cell([2100, 2200, 4500])},
             "ceiling": {32: cell([9000, 9000, 9000])}}
    table = model_table("digits", cells, LABELS, [32])
    assert "| 2,100 / 2,200 / 4,500 |" in table and "| 3,000 / 3,100 / 3,200 |" in table


def test_repeats_are_paired_by_repeat_not_by_position_when_one_failed():
    ours = {**cell([3000, 3100]), "repeat_each": [0, 2]}  # repeat 1 failed
    theirs = {**cell([2900, 9000, 3200]), "repeat_each": [0, 1, 2]}
    line = verdict("digits", {"optiserve": {8: ours}, "fastapi": {8: theirs}}, LABELS, [8])[0]
    assert line.endswith("repeat by repeat, **ahead in 1 of 2**")  # 3000 > 2900; 3100 < 3200; 9000 unpaired
