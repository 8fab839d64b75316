"""The command-line contract: `python -m bgremover ...` as a real process, read as a user reads it.

Every test runs the CLI as a subprocess with a clean environment (no BGREMOVER_*
variable except those the test sets), so what it checks is what a user at a
shell sees: the exit code, the lines on stdout and stderr, and the files left
behind. Exit codes: 0 success, 1 the work failed, 2 a usage or configuration problem.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import PHOTOS
from tests.support.cli import (
    cli,
    one_error_line,
)

COMMANDS = ("run", "status", "retry", "cancel", "remove", "bench", "models")


# ---------------------------------------------------------------- help


def test_help_lists_every_command():
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: bgremover")
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ")}
    assert set(COMMANDS) <= listed, result.stdout


def test_no_command_is_a_usage_error():
    result = cli()
    assert result.returncode == 2
    assert "COMMAND" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- settings


def test_remove_refuses_a_missing_execution_provider_too(tmp_path):
    out = tmp_path / "out.png"
    result = cli("remove", PHOTOS / "coffee.jpg", out, env={"BGREMOVER_PROVIDERS": "CUDAExecutionProvider"})
    assert result.returncode == 2, result.stderr
    assert "CUDAExecutionProvider is not available" in one_error_line(result)
    assert not out.exists()


def test_an_unknown_key_in_the_config_file_is_named(tmp_path):
    config = tmp_path / "bgremover.toml"
    config.write_text('output_format = "webp"\ncolour = "red"\n')
    result = cli("status", "--root", tmp_path, "--config", config)
    assert result.returncode == 2
    assert one_error_line(result) == "bgremover: unknown setting 'colour'"


def test_a_bad_value_in_the_config_file_is_named(tmp_path):
    config = tmp_path / "bgremover.toml"
    config.write_text("quality = 0\n")
    result = cli("status", "--root", tmp_path, "--config", config)
    assert result.returncode == 2
    assert "'quality'" in one_error_line(result)


def test_a_config_file_that_is_not_toml_is_a_clear_error(tmp_path):
    config = tmp_path / "bgremover.toml"
    config.write_text("quality = = 3\n")
    result = cli("status", "--root", tmp_path, "--config", config)
    assert result.returncode == 2
    assert str(config) in one_error_line(result)


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_a_missing_config_file_is_named(tmp_path, how):
    missing = tmp_path / "nowhere.toml"
    if how == "flag":
        result = cli("status", "--root", tmp_path, "--config", missing)
    else:
        result = cli("status", "--root", tmp_path, env={"BGREMOVER_CONFIG": str(missing)})
    assert result.returncode == 2
    assert one_error_line(result) == f"bgremover: config file {missing} does not exist"


def root_named_by_status(result: subprocess.CompletedProcess) -> Path:
    assert result.returncode == 0, result.stderr
    prefix = "no sessions yet under "
    assert result.stdout.startswith(prefix), result.stdout
    return Path(result.stdout[len(prefix) :].strip())


def test_root_precedence_is_flag_then_environment_then_file_then_default(tmp_path):
    config = tmp_path / "bgremover.toml"
    config.write_text(f'root = "{tmp_path / "from-file"}"\n')
    by_env = {"BGREMOVER_ROOT": str(tmp_path / "from-env")}

    default = cli("status", cwd=tmp_path)
    assert root_named_by_status(default) == tmp_path.resolve() / "data"
    from_file = cli("status", "--config", config)
    assert root_named_by_status(from_file) == tmp_path / "from-file"
    from_config_variable = cli("status", env={"BGREMOVER_CONFIG": str(config)})
    assert root_named_by_status(from_config_variable) == tmp_path / "from-file"
    from_env = cli("status", "--config", config, env=by_env)
    assert root_named_by_status(from_env) == tmp_path / "from-env"
    from_flag = cli("status", "--config", config, "--root", tmp_path / "from-flag", env=by_env)
    assert root_named_by_status(from_flag) == tmp_path / "from-flag"


def test_precedence_holds_for_every_setting_not_just_root(tmp_path, monkeypatch):
    from bgremover.settings import load_settings

    for key in [k for k in os.environ if k.startswith("BGREMOVER_")]:
        monkeypatch.delenv(key)
    config = tmp_path / "bgremover.toml"
    config.write_text('quality = 50\noutput_format = "webp"\nstable_seconds = 7\n')
    monkeypatch.setenv("BGREMOVER_QUALITY", "60")
    monkeypatch.setenv("BGREMOVER_OUTPUT_FORMAT", "avif")
    settings = load_settings(config, quality=70)
    # quality: flag wins; output_format: env beats file; stable_seconds: file beats default.
    assert (settings.quality, settings.output_format, settings.stable_seconds) == (70, "avif", 7.0)
    assert settings.session_idle_seconds == 30.0  # nobody set it: the default


# ---------------------------------------------------------------- a damaged model


def test_a_damaged_model_stops_remove_too(tmp_path, damaged_install):
    out = tmp_path / "out.png"
    result = cli("remove", PHOTOS / "astronaut.jpg", out, cwd=tmp_path, pythonpath=damaged_install)
    assert result.returncode == 2, result.stderr
    assert "sha256" in one_error_line(result)
    assert list(tmp_path.glob("*out.png")) == []


# ---------------------------------------------------------------- remove


@pytest.mark.parametrize("extension", [".png", ".webp", ".avif"])
def test_remove_writes_an_rgba_cutout_of_the_input_size(tmp_path, extension):
    source = PHOTOS / "astronaut.jpg"
    out = tmp_path / f"out{extension}"
    result = cli("remove", source, out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out}"
    with Image.open(source) as original, Image.open(out) as cutout:
        assert cutout.format == extension[1:].upper()
        assert cutout.mode == "RGBA"
        assert cutout.size == original.size
        alpha = cutout.getchannel("A")
        low, high = alpha.getextrema()
        assert low < 16 and high > 240, "a cutout has both background and subject"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_remove_with_output_both_writes_the_mask_beside_the_cutout(tmp_path):
    out = tmp_path / "out.png"
    result = cli("remove", PHOTOS / "astronaut.jpg", out, env={"BGREMOVER_OUTPUT": "both"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wrote", str(tmp_path / "out.mask.png"), "wrote", str(out)]
    with Image.open(out) as cutout, Image.open(tmp_path / "out.mask.png") as mask:
        assert mask.mode == "L" and mask.tobytes() == cutout.getchannel("A").tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mask.png", "out.png"]


def test_remove_to_jpeg_on_a_colour_and_refused_without_one(tmp_path):
    out = tmp_path / "out.jpg"
    refused = cli("remove", PHOTOS / "astronaut.jpg", out)
    assert refused.returncode == 2 and "JPEG cannot keep transparency" in one_error_line(refused)
    assert list(tmp_path.iterdir()) == []
    done = cli("remove", PHOTOS / "astronaut.jpg", out, env={"BGREMOVER_BACKGROUND": "white"})
    assert done.returncode == 0, done.stderr
    with Image.open(out) as jpeg:
        assert (jpeg.format, jpeg.mode) == ("JPEG", "RGB")


def test_remove_to_an_unknown_extension_is_a_usage_error(tmp_path):
    out = tmp_path / "out.gif"
    result = cli("remove", PHOTOS / "astronaut.jpg", out)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "out.gif" in line and ".png" in line and ".webp" in line and ".avif" in line, line
    assert list(tmp_path.iterdir()) == []


def test_remove_of_a_text_file_fails_with_one_line_and_leaves_nothing(tmp_path):
    source = tmp_path / "notes.jpg"
    source.write_text("this is not an image\n")
    out = tmp_path / "out" / "cut.png"
    out.parent.mkdir()
    result = cli("remove", source, out)
    assert result.returncode == 1
    line = one_error_line(result)
    assert str(source) in line and "not an image" in line, line
    assert list(out.parent.iterdir()) == [], "neither OUT nor its temp file may be left"


def test_remove_of_a_missing_file_fails_with_one_line(tmp_path):
    out = tmp_path / "cut.png"
    result = cli("remove", tmp_path / "absent.jpg", out)
    assert result.returncode == 1
    assert "absent.jpg" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- status, retry, cancel


def test_status_without_a_database_says_there_are_no_sessions(tmp_path):
    result = cli("status", "--root", tmp_path / "empty")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"no sessions yet under {tmp_path / 'empty'}\n"
    assert not (tmp_path / "empty").exists(), "status only reads"


def test_retry_without_a_database_fails(tmp_path):
    result = cli("retry", "--root", tmp_path, "report")
    assert result.returncode == 1
    assert one_error_line(result) == f"bgremover: no sessions yet under {tmp_path}"
