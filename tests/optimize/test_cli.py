"""`optiserve optimize` arguments: what it refuses before any work, in one line with exit code 2, and the
default source it names."""

import argparse
import importlib

import numpy as np
import pytest

from optimize import cli


def parse(*args: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(args))


def refusal(capsys, *args: str) -> str:
    """What `optiserve optimize args` prints when it refuses: one line, exit code 2, no traceback."""
    assert cli.main(parse(*args)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("optiserve optimize: "), lines
    assert "Traceback" not in lines[0]
    return lines[0]


def test_a_model_file_without_data_is_refused_naming_the_flag(tmp_path, capsys):
    line = refusal(capsys, str(tmp_path / "model.onnx"), "--out", str(tmp_path / "out"))
    assert "model.onnx is a model file; expected --data with labelled validation data" in line
    assert not (tmp_path / "out").exists()


def test_settings_out_of_range_are_refused_before_any_work(tmp_path, capsys):
    line = refusal(capsys, "--out", str(tmp_path / "out"), "--latency-repeats", "1")
    assert "latency_repeats: Input should be greater than or equal to 10, got 1" in line
    assert not (tmp_path / "out").exists()


def test_a_module_that_is_not_there_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = refusal(capsys, "no_such_module:source", "--out", str(tmp_path / "out"))
    assert "cannot import 'no_such_module'" in line and "current directory" in line


def test_a_function_returning_something_else_is_refused_naming_what_was_expected(tmp_path, capsys, monkeypatch):
    (tmp_path / "not_a_source.py").write_text("def source():\n    return 42\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    line = refusal(capsys, "not_a_source:source", "--out", str(tmp_path / "out"))
    assert "expected it to return a ModelSource, an EmbeddingSource or a TextClassifierSource, got int" in line


def test_a_data_file_with_the_wrong_array_names_is_refused_naming_the_expected_ones(tmp_path, capsys,
                                                                                   digits_artifact):
    np.savez(tmp_path / "val.npz", pixels=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))
    line = refusal(capsys, str(digits_artifact / "model.onnx"), "--data", str(tmp_path / "val.npz"),
                   "--out", str(tmp_path / "out"))
    assert "inputs" in line and "pixels" in line, line


def test_debug_shows_the_error_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModuleNotFoundError):
        cli.main(parse("no_such_module:source", "--out", str(tmp_path / "out"), "--debug"))


def test_the_default_source_names_the_digits_demo_function():
    module_name, _, function = parse("--out", "x").source.partition(":")
    assert callable(getattr(importlib.import_module(module_name), function))
