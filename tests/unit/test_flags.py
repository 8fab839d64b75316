"""The setting flags of `run`, `remove` and `bench` (cli/flags.py): each is another way to give a setting.

Parsed by the command line's own parser and turned into settings as `main` does,
in this process: a flag gives the very setting its option would, wins over the
environment and the config file, and a bad value is refused in the settings' own
sentence. What each setting does to a picture is tested beside its step
(test_outputs, test_backgrounds, test_framing, test_edges, test_matting); one
real `bgremover remove` and the exit codes are in tests/commands/test_flags.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import ImageColor

from bgremover.cli.flags import flag_settings
from bgremover.main import build_parser
from bgremover.options import TRANSPARENT
from bgremover.settings import Settings, SettingsError, load_settings

REMOVE, RUN, BENCH = "remove", "run", "bench"
COMMAND_LINES = {REMOVE: [REMOVE, "in.jpg", "out.png"], RUN: [RUN], BENCH: [BENCH]}


@pytest.fixture(autouse=True)
def no_user_settings(monkeypatch, tmp_path):
    """No BGREMOVER_ variable of whoever runs the tests, and a root of the test's own."""
    for name in [name for name in os.environ if name.startswith("BGREMOVER_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def settings_of(*words: str, command: str = REMOVE, config: Path | None = None) -> Settings:
    """The settings `bgremover COMMAND ... WORDS` runs with, read as main() reads them."""
    args = build_parser().parse_args([*COMMAND_LINES[command], *words, *(["--config", str(config)] if config else [])])
    return load_settings(args.config, root=args.root, **flag_settings(args))


# ---------------------------------------------------------------- each flag gives its setting


@pytest.mark.parametrize(
    ("flags", "setting"),
    [
        (["-om"], {"output": "mask"}),
        (["--only-mask"], {"output": "mask"}),
        (["-bgc", "255", "255", "255", "0"], {"background": TRANSPARENT}),
        (["-f", "webp"], {"output_format": "webp"}),
        (["--quality", "5"], {"quality": 5}),
        (["--crop", "subject"], {"crop": "subject"}),
        (["--edges", "clean"], {"edges": "clean"}),
        (["--decontaminate", "true"], {"decontaminate": True}),
        (["-m", "redness"], {"model": "redness"}),
        (["--model", "redness"], {"model": "redness"}),
        (["--background", "blue"], {"background": "blue"}),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_each_flag_gives_the_setting_its_option_names(flags, setting):
    args = build_parser().parse_args([*COMMAND_LINES[REMOVE], *flags])
    assert set(flag_settings(args)) == set(setting), "the flag names its option's setting, and no other"
    assert settings_of(*flags) == load_settings(None, **setting)


@pytest.mark.parametrize(
    ("rgba", "named"), [(("255", "255", "255", "255"), "white"), (("0", "0", "255", "255"), "blue")]
)
def test_bgc_with_alpha_255_is_that_colour_opaque(rgba, named):
    by_rgba = settings_of("-bgc", *rgba).background
    assert ImageColor.getrgb(by_rgba) == ImageColor.getrgb(settings_of("--background", named).background)


def test_the_daemon_flag_is_a_flag_of_run_only():
    assert settings_of("--job-slots", "3", command=RUN).job_slots == 3
    with pytest.raises(SystemExit):
        settings_of("--job-slots", "3", command=REMOVE)


# ---------------------------------------------------------------- precedence: flag over environment over file


def test_a_flag_beats_the_environment_which_beats_the_file(tmp_path, monkeypatch):
    config = tmp_path / "bgremover.toml"
    config.write_text('output_format = "avif"\n')
    assert settings_of(config=config).output_format == "avif"
    monkeypatch.setenv("BGREMOVER_OUTPUT_FORMAT", "webp")
    assert settings_of(config=config).output_format == "webp"
    assert settings_of("-f", "png", config=config).output_format == "png"


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "flags, named, commands",
    [
        (["--quality", "0"], "bad setting 'quality'", (REMOVE, RUN, BENCH)),
        # bench's own --edges is its edge-quality measurement and takes no value (tests/bench).
        (["--edges", "soft"], "bad setting 'edges'", (REMOVE, RUN)),
        (["--decontaminate", "maybe"], "bad setting 'decontaminate'", (REMOVE, RUN, BENCH)),
        (["--crop", "circle"], "bad setting 'crop'", (REMOVE, RUN, BENCH)),
        (["--background", "not-a-colour"], "bad setting 'background'", (REMOVE, RUN, BENCH)),
        (["-bgc", "255", "255", "255", "128"], "-bgc alpha must be 255", (REMOVE, RUN, BENCH)),
        (["-bgc", "300", "0", "0", "255"], "-bgc takes four whole numbers", (REMOVE, RUN, BENCH)),
        # bench's own -f picks the format of its measurements, from a fixed list (tests/bench).
        (["-f", "gif"], "bad setting 'output_format'", (REMOVE, RUN)),
        (["-f", "jpeg"], 'output_format "jpeg" cannot keep transparency', (REMOVE, RUN)),
    ],
)
def test_a_bad_flag_value_is_refused_in_the_settings_sentence(tmp_path, flags, named, commands):
    for command in commands:
        with pytest.raises(SettingsError) as refused:
            settings_of(*flags, command=command)
        assert named in str(refused.value), (command, str(refused.value))
        assert "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == [], "nothing was written"


def test_a_flag_value_is_checked_like_the_same_setting_from_the_environment(monkeypatch):
    with pytest.raises(SettingsError) as by_flag:
        settings_of("--quality", "101")
    monkeypatch.setenv("BGREMOVER_QUALITY", "101")
    with pytest.raises(SettingsError) as by_env:
        settings_of()
    assert str(by_flag.value) == str(by_env.value)
