"""The A/B bench's pure parts: variants from the command line, and the order each cell measures them in."""

import pytest

from benchmarks.ab_bench import parse_variant, rotation


def test_a_variant_is_a_name_then_its_environment():
    assert parse_variant(["one per call", "OPTISERVE_TEXT_TOKEN_BUDGET=1", "X=a=b"]) == (
        "one per call", {"OPTISERVE_TEXT_TOKEN_BUDGET": "1", "X": "a=b"})
    assert parse_variant(["default"]) == ("default", {})


def test_a_setting_without_equals_is_refused_with_what_was_expected():
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        parse_variant(["broken", "OPTISERVE_TEXT_TOKEN_BUDGET"])


def test_every_variant_goes_first_in_turn():
    names = ["a", "b", "c"]
    firsts = [rotation(names, turn)[0] for turn in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]
    assert all(sorted(rotation(names, turn)) == names for turn in range(6))

