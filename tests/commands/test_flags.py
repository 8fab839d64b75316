"""The setting flags of `run`, `remove` and `bench` (cli/flags.py), as a user at a shell uses them.

That each flag gives its setting, wins over the environment and the config
file, and is refused in the settings' own sentence is tests/unit/test_flags.py.
Here, real commands: a flag reaches a real `bgremover remove`, a bad value stops
each command in one line with exit code 2, and a BGREMOVER_ variable that names
no setting is warned about, by name.
"""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from tests.conftest import PHOTOS
from tests.support.cli import cli, cli_piped, one_error_line
from tests.support.images import shape_on_texture

PHOTO = PHOTOS / "astronaut.jpg"


# ---------------------------------------------------------------- each flag does what its setting does


def test_format_picks_the_encoder_of_stdout(tmp_path):
    result = cli_piped("remove", "-", "-", "-f", "webp", stdin=PHOTO.read_bytes())
    assert result.returncode == 0, result.stderr
    with Image.open(io.BytesIO(result.stdout)) as image:
        assert (image.format, image.mode) == ("WEBP", "RGBA")


# ---------------------------------------------------------------- precedence: flag over environment over file


# ---------------------------------------------------------------- refusals


REMOVE, RUN, BENCH = "remove", "run", "bench"


@pytest.mark.parametrize("command", [REMOVE, RUN, BENCH])
def test_a_bad_flag_value_stops_each_command_in_one_line_with_exit_code_2(tmp_path, command):
    """Which values are refused, and in which words, is tests/unit/test_flags.py; here, what a shell sees."""
    lines = {REMOVE: [REMOVE, PHOTO, tmp_path / "out.png"], RUN: [RUN, "--root", tmp_path / "root"], BENCH: [BENCH]}
    result = cli(*lines[command], "--quality", "0")
    assert result.returncode == 2, result.stderr
    assert "bad setting 'quality'" in one_error_line(result)
    assert list(tmp_path.iterdir()) == [], "nothing was started, nothing written"


def test_an_unknown_model_is_refused_in_one_line_with_exit_code_2(tmp_path):
    source = tmp_path / "disc.png"
    shape_on_texture()[0].save(source)
    unknown = cli("remove", "--model", "no-such-model", source, tmp_path / "none.png")
    assert unknown.returncode == 2 and "no-such-model" in one_error_line(unknown)


def test_format_disagreeing_with_the_output_extension_is_refused(tmp_path):
    result = cli("remove", PHOTO, tmp_path / "out.png", "-f", "webp")
    assert result.returncode == 2
    assert "out.png" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- an unknown BGREMOVER_ variable


def warnings_of(result) -> list[dict]:
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line["event"] == "unknown_environment_variable"]


def test_an_unknown_variable_is_named_with_the_setting_it_most_likely_meant(tmp_path):
    result = cli("status", "--root", tmp_path, env={"BGREMOVER_OUTPUT_FORMATT": "webp", "BGREMOVER_COLOUR": "red"})
    assert result.returncode == 0, result.stderr
    warned = {line["variable"]: line.get("did_you_mean") for line in warnings_of(result)}
    assert warned == {"BGREMOVER_OUTPUT_FORMATT": "BGREMOVER_OUTPUT_FORMAT", "BGREMOVER_COLOUR": None}
    assert all(line["level"] == "warning" for line in warnings_of(result))


def test_the_variables_bgremover_itself_uses_are_not_typos(tmp_path):
    config = tmp_path / "bgremover.toml"
    config.write_text("quality = 80\n")
    env = {
        "BGREMOVER_CONFIG": str(config),
        "BGREMOVER_ZIP": "a.zip",
        "BGREMOVER_STATUS": "a.json",
        "BGREMOVER_SESSION": "a",
        "BGREMOVER_QUALITY": "70",
        "BGREMOVER_ROOT": str(tmp_path),
    }
    result = cli("status", env=env)
    assert result.returncode == 0, result.stderr
    assert warnings_of(result) == [] and result.stderr == ""
