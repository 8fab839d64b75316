"""The setting flags of `run`, `remove` and `bench` (cli/flags.py), as a user at a shell uses them.

A flag is another way to give a setting: each changes the result as its
setting would, wins over the environment and the config file, and a bad value
is refused in the settings' own one line with exit code 2. A BGREMOVER_
variable that names no setting is warned about, by name.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import PHOTOS
from tests.support.cli import cli, cli_piped, one_error_line
from tests.support.images import iou, shape_on_texture
from tests.support.onnxgraphs import manifest_entry, redness_model, write_manifest

PHOTO = PHOTOS / "astronaut.jpg"


def cut(tmp_path, *flags: str, output: str = "out.png", source: Path = PHOTO) -> Image.Image:
    """`bgremover remove SOURCE OUT FLAGS...`, which must succeed; the decoded output."""
    out = tmp_path / output
    result = cli("remove", source, out, *flags)
    assert result.returncode == 0, result.stderr
    image = Image.open(out)
    image.load()
    return image


def background_of(image: Image.Image, cutout: Image.Image) -> np.ndarray:
    """`image`'s pixels where the plain cutout is fully transparent: the background, whatever it became."""
    clear = np.asarray(cutout.getchannel("A")) == 0
    assert clear.mean() > 0.1, "the photo has background to look at"
    return np.asarray(image)[clear]


# ---------------------------------------------------------------- each flag does what its setting does


@pytest.mark.parametrize("flag", ["-om", "--only-mask"])
def test_only_mask_writes_the_grey_mask_alone(tmp_path, flag):
    mask = cut(tmp_path, flag)
    cutout = cut(tmp_path, output="cutout.png")
    assert (mask.format, mask.mode) == ("PNG", "L")
    assert mask.tobytes() == cutout.getchannel("A").tobytes()


def test_bgc_with_alpha_255_is_that_colour_opaque_and_alpha_0_is_transparent(tmp_path):
    plain = cut(tmp_path, output="plain.png")
    white = cut(tmp_path, "-bgc", "255", "255", "255", "255", output="white.png")
    assert white.mode == "RGB", "an opaque background leaves no alpha"
    assert (background_of(white, plain) == 255).all()
    clear = cut(tmp_path, "-bgc", "255", "255", "255", "0", output="clear.png")
    assert clear.mode == "RGBA" and clear.tobytes() == plain.tobytes()


def test_bgc_and_background_give_the_same_colour(tmp_path):
    by_rgba = cut(tmp_path, "-bgc", "0", "0", "255", "255", output="rgba.png")
    by_name = cut(tmp_path, "--background", "blue", output="named.png")
    assert by_rgba.tobytes() == by_name.tobytes()
    assert (background_of(by_name, cut(tmp_path, output="plain.png")) == (0, 0, 255)).all()


def test_format_picks_the_encoder_of_stdout(tmp_path):
    result = cli_piped("remove", "-", "-", "-f", "webp", stdin=PHOTO.read_bytes())
    assert result.returncode == 0, result.stderr
    with Image.open(io.BytesIO(result.stdout)) as image:
        assert (image.format, image.mode) == ("WEBP", "RGBA")


def test_quality_changes_the_encoded_size(tmp_path):
    low = tmp_path / "low.webp"
    high = tmp_path / "high.webp"
    assert cli("remove", PHOTO, low, "--quality", "5").returncode == 0
    assert cli("remove", PHOTO, high, "--quality", "95").returncode == 0
    assert low.stat().st_size < high.stat().st_size / 2


def test_crop_subject_frames_the_subject(tmp_path):
    cup = PHOTOS / "coffee.jpg"  # a subject with room around it
    whole = cut(tmp_path, output="whole.png", source=cup)
    cropped = cut(tmp_path, "--crop", "subject", output="cropped.png", source=cup)
    assert cropped.width < whole.width and cropped.height <= whole.height


def test_edges_clean_changes_the_mask(tmp_path):
    raw = cut(tmp_path, "-om", output="raw.png")
    clean = cut(tmp_path, "-om", "--edges", "clean", output="clean.png")
    assert raw.size == clean.size
    assert raw.tobytes() != clean.tobytes()


def test_model_names_the_model_that_cuts(tmp_path):
    root = tmp_path / "root"
    write_manifest(root / "models", {"redness": manifest_entry(redness_model(root / "models" / "redness.onnx"))})
    image, truth = shape_on_texture()
    source = tmp_path / "disc.png"
    image.save(source)
    masks = {}
    for model in ("redness", "u2netp"):
        out = tmp_path / f"{model}.png"
        result = cli("remove", "--root", root, "-m", model, "-om", source, out)
        assert result.returncode == 0, result.stderr
        masks[model] = np.asarray(Image.open(out)) > 127
    assert iou(masks["redness"], truth) > 0.9
    assert not np.array_equal(masks["redness"], masks["u2netp"]), "the flag chose another model"
    unknown = cli("remove", "--model", "no-such-model", source, tmp_path / "none.png")
    assert unknown.returncode == 2 and "no-such-model" in one_error_line(unknown)


# ---------------------------------------------------------------- precedence: flag over environment over file


def test_a_flag_beats_the_environment_which_beats_the_file(tmp_path):
    config = tmp_path / "bgremover.toml"
    config.write_text('output_format = "avif"\n')
    inbox = tmp_path / "in"
    inbox.mkdir()
    Image.open(PHOTO).resize((160, 120)).save(inbox / "photo.jpg")

    def formats(name: str, *flags: str, env: dict | None = None) -> list[str]:
        result = cli("remove", inbox, "-o", tmp_path / name, "--in-process", "--config", config, *flags, env=env)
        assert result.returncode == 0, result.stderr
        return sorted(Image.open(path).format for path in (tmp_path / name).iterdir())

    assert formats("file") == ["AVIF"]
    assert formats("env", env={"BGREMOVER_OUTPUT_FORMAT": "webp"}) == ["WEBP"]
    assert formats("flag", "-f", "png", env={"BGREMOVER_OUTPUT_FORMAT": "webp"}) == ["PNG"]


# ---------------------------------------------------------------- refusals


REMOVE, RUN, BENCH = "remove", "run", "bench"


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
def test_a_bad_flag_value_is_refused_in_one_line_with_exit_code_2(tmp_path, flags, named, commands):
    lines = {REMOVE: [REMOVE, PHOTO, tmp_path / "out.png"], RUN: [RUN, "--root", tmp_path / "root"], BENCH: [BENCH]}
    for command in (lines[name] for name in commands):
        result = cli(*command, *flags)
        assert result.returncode == 2, (command, result.stderr)
        assert named in one_error_line(result), (command, result.stderr)
    assert list(tmp_path.iterdir()) == [], "nothing was started, nothing written"


def test_a_flag_value_is_checked_like_the_same_setting_from_the_environment(tmp_path):
    by_flag = cli("remove", PHOTO, tmp_path / "out.png", "--quality", "101")
    by_env = cli("remove", PHOTO, tmp_path / "out.png", env={"BGREMOVER_QUALITY": "101"})
    assert by_flag.returncode == by_env.returncode == 2
    assert one_error_line(by_flag) == one_error_line(by_env)


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
