"""The `cmrfl` command: help everywhere, and the site commands working end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmrfl.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["phantom"], ["demo"], ["site"], ["site", "ingest"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_phantom_then_ingest_from_the_command_line(tmp_path: Path):
    hospitals = tmp_path / "hospitals"
    result = runner.invoke(
        app, ["phantom", "--sites", "2", "--cases-per-site", "2", "--seed", "3", "--out", str(hospitals)]
    )
    assert result.exit_code == 0, result.output
    site = hospitals / "site-01"
    site_dir = tmp_path / "site-01"
    result = runner.invoke(
        app,
        [
            "site",
            "ingest",
            str(site / "dicom"),
            "--site-dir",
            str(site_dir),
            "--manifest",
            str(site / "manifest.csv"),
            "--labels",
            str(site / "labels"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((site_dir / "ingest-report.json").read_text())
    assert report["cases_written"] == 6  # per patient of the whole exam: the LGE stack, native and post MOLLI


def test_ingest_of_a_missing_folder_names_it(tmp_path: Path):
    missing = tmp_path / "no-such-folder"
    result = runner.invoke(app, ["site", "ingest", str(missing), "--site-dir", str(tmp_path / "s")])
    assert result.exit_code != 0
    assert "no-such-folder" in result.output


def test_cmrfl_demo_defaults_are_the_demo_settings_defaults():
    """The CLI spells out its defaults for --help; they must not drift from DemoSettings'
    (the demo once ran 20 rounds from the command line and 10 from Python)."""
    import dataclasses
    import inspect

    from cmrfl.cli import demo
    from cmrfl.demo import DemoSettings

    settings = {field.name: field.default for field in dataclasses.fields(DemoSettings)}
    renamed = {"epsilon": "target_epsilon"}
    for name, parameter in inspect.signature(demo).parameters.items():
        assert parameter.default == settings[renamed.get(name, name)], name
