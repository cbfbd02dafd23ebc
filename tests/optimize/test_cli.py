"""`optiserve optimize` arguments: what it refuses before any work, and the default source it names."""

import argparse
import importlib

import pytest

from optimize import cli


def parse(*args: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(args))


def test_a_model_file_without_data_is_refused_naming_the_flag(tmp_path):
    with pytest.raises(SystemExit, match=r"model.onnx is a model file; expected --data with labelled validation data"):
        cli.main(parse(str(tmp_path / "model.onnx"), "--out", str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_settings_out_of_range_are_refused_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match=r"(?s)optiserve optimize: .*latency_repeats.*greater than or equal to 10"):
        cli.main(parse("--out", str(tmp_path / "out"), "--latency-repeats", "1"))
    assert not (tmp_path / "out").exists()


def test_the_default_source_names_the_digits_demo_function():
    module_name, _, function = parse("--out", "x").source.partition(":")
    assert callable(getattr(importlib.import_module(module_name), function))
