"""The settings and metrics references in docs/reference/ are what the code generates, and cover all of it."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from optimize.settings import OptimizeSettings
from optiserve import cli, reference
from serve.settings import ServeSettings

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"


def _printed(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


@pytest.mark.parametrize("name", ["settings", "metrics"])
def test_the_committed_reference_is_what_the_command_prints(name):
    committed = (REFERENCE / f"{name}.md").read_text()
    assert committed == _printed(name, "--markdown"), (
        f"docs/reference/{name}.md is out of date: run `.venv/bin/optiserve {name} --markdown > "
        f"docs/reference/{name}.md` and commit it"
    )


def test_every_setting_has_a_row_with_its_environment_variable_and_a_description():
    text = reference.settings_markdown()
    for settings, prefix in ((ServeSettings, "OPTISERVE_"), (OptimizeSettings, "OPTISERVE_OPTIMIZE_")):
        for name, info in settings.model_fields.items():
            assert f"| `{prefix}{name.upper()}` |" in text, name
            assert info.description, f"{settings.__name__}.{name} has no description for the reference"


def test_every_flag_in_the_reference_is_a_flag_of_its_command():
    from optimize.cli import SETTINGS_FLAGS as optimize_flags
    from serve.cli import SETTINGS_FLAGS as serve_flags

    for command, flags, settings in (("serve", serve_flags, ServeSettings), ("optimize", optimize_flags,
                                                                            OptimizeSettings)):
        help_text = io.StringIO()
        with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
            cli.main([command, "--help"])
        for field, flag in flags.items():
            assert field in settings.model_fields, f"{flag} sets {field}, which {settings.__name__} lacks"
            assert flag in help_text.getvalue(), f"optiserve {command} has no {flag}"


def test_the_metrics_reference_names_every_metric_the_server_makes():
    names = reference.metric_names()
    assert "ray_optiserve_requests_total" in names
    assert "ray_optiserve_request_latency_seconds_bucket" in names
    assert len(names) == len(set(names))
