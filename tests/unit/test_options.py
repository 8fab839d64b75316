"""The image options are declared once (bgremover/options.py): a new one reaches every user of them.

`WithSepia` stands for the next option: one field more in the declaration and
nothing else. Each test shows one place it then appears, as that place's own
code derives it: the settings, a job ticket, the job's command line, the
Python API's keywords and the flags of `run`, `remove` and `bench`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bgremover.api import more_options
from bgremover.cli.flags import add_setting_flags, flag_settings
from bgremover.contract import JobSpec
from bgremover.intake.tickets import TicketError, validated
from bgremover.options import ImageOptions, names, option, settings_model, ticket_names
from bgremover.settings import Settings, SettingsError, describe, load_settings


@dataclass(frozen=True)
class WithSepia(ImageOptions):
    sepia: int = field(default=0, metadata=option("percent of sepia toning", ge=0, le=100, flags=("--sepia",)))


def test_the_new_option_is_a_setting_with_its_range_and_its_variable(monkeypatch):
    class SepiaSettings(settings_model(WithSepia), Settings):
        pass

    monkeypatch.setenv("BGREMOVER_SEPIA", "30")
    assert SepiaSettings().sepia == 30
    monkeypatch.setenv("BGREMOVER_SEPIA", "300")
    with pytest.raises(ValueError) as refused:
        SepiaSettings()
    assert describe(refused.value).startswith("bad setting 'sepia': Input should be less than or equal to 100")


def test_a_ticket_may_set_the_new_option_and_is_refused_out_of_range():
    assert ticket_names(WithSepia) == (*ticket_names(), "sepia")
    assert validated({"sepia": 40}, options=WithSepia) == {"sepia": 40}
    with pytest.raises(TicketError, match="bad setting 'sepia'"):
        validated({"sepia": -1}, options=WithSepia)
    with pytest.raises(TicketError, match="which a ticket cannot set"):
        validated({"sepia": 40})  # the declaration as it is has no such option


def test_the_new_option_travels_on_the_jobs_command_line_and_back(tmp_path: Path):
    spec = JobSpec(
        input=tmp_path / "a.jpg", output=tmp_path / "a.png", report=tmp_path / "a.json", options=WithSepia(sepia=25)
    )
    argv = spec.argv()
    assert argv[argv.index("--sepia") + 1] == "25"
    assert JobSpec.from_argv(argv, prog="job", description="", options=WithSepia) == spec


def test_the_new_option_is_a_keyword_of_remove():
    assert more_options(WithSepia) == (*more_options(), "sepia")
    assert set(more_options()) < set(names()), "remove's named keywords are options too"


def test_the_new_option_has_the_flag_it_declares():
    parser = argparse.ArgumentParser()
    add_setting_flags(parser, options=WithSepia)
    given = flag_settings(parser.parse_args(["--sepia", "35", "--quality", "70"]), WithSepia)
    assert given == {"sepia": "35", "quality": "70"}
    assert settings_model(WithSepia).model_validate(given).sepia == 35
    add_setting_flags(plain := argparse.ArgumentParser())
    with pytest.raises(SystemExit):
        plain.parse_args(["--sepia", "35"])  # the declaration as it is has no such flag


def test_the_declaration_names_each_option_once_and_settings_load_them(tmp_path):
    assert len(set(names())) == len(names())
    assert set(names()) <= set(Settings.model_fields)
    with pytest.raises(SettingsError, match="bad setting 'quality'"):
        load_settings(None, root=tmp_path, quality=0)
