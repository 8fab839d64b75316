"""`bgremover remove IN... -o OUTDIR` and `remove - -`: many images at once, or a pipe, without the daemon.

Run as a real process on real folders. Every good image is cut out under its
relative path, named as the daemon names ZIP members; each failure is one line
naming the file and why, and the exit code is 1 if any failed. Each image runs
in a fresh process from the fork server unless --in-process says otherwise,
which the fake job's `whoami` shows (the `job_module` setting picks it).
"""

from __future__ import annotations

import io
import json
import signal

import pytest
from PIL import Image

from bgremover.cli.batch import progress_line
from tests.conftest import PHOTOS
from tests.support.cli import cli, cli_piped, one_error_line
from tests.support.onnxgraphs import manifest_entry, redness_model, write_manifest

FAKE_JOB = {"BGREMOVER_JOB_MODULE": "tests.support.fakejob"}


def small_photo(path, name: str = "astronaut", size=(160, 120)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(PHOTOS / f"{name}.jpg").convert("RGB").resize(size).save(path)
    return path


def failure_lines(result) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("bgremover: ")]


@pytest.fixture
def tree(tmp_path):
    """photos/a.jpg, photos/sub/b.png, photos/sub/deeper/c.jpg; and what a folder also holds that is no image."""
    photos = tmp_path / "photos"
    small_photo(photos / "a.jpg")
    small_photo(photos / "sub" / "b.png", "coffee")
    small_photo(photos / "sub" / "deeper" / "c.jpg", "chelsea")
    (photos / "notes.txt").write_text("not an image, and not named like one\n")
    small_photo(photos / ".hidden" / "d.jpg")
    return photos


@pytest.mark.parametrize("how", [[], ["--in-process"]], ids=["isolated", "in-process"])
def test_a_folder_tree_with_a_broken_file_cuts_out_the_rest_and_names_the_failure(tmp_path, tree, how):
    (tree / "sub" / "broken.jpg").write_text("this is not an image\n")
    out = tmp_path / "out"
    result = cli("remove", tree, "-o", out, *how)
    assert result.returncode == 1, result.stderr
    assert failure_lines(result) == [
        f"bgremover: {tree / 'sub' / 'broken.jpg'}: the file is not an image Pillow can read"
    ]
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file())
    assert written == ["a.png", "sub/b.png", "sub/deeper/c.png"]
    for path in out.rglob("*.png"):
        with Image.open(path) as cutout:
            assert (cutout.mode, cutout.size) == ("RGBA", (160, 120))
            low, high = cutout.getchannel("A").getextrema()
            assert low < 16 and high > 240, path
    assert result.stdout.strip() == f"3 of 4 images cut out into {out}; 1 failed"


def test_all_good_exits_0_with_the_format_flag_and_files_named_beside_folders(tmp_path, tree):
    single = small_photo(tmp_path / "loose.jpg", "coffee")
    out = tmp_path / "out"
    result = cli("remove", tree, single, "-o", out, "-f", "webp")
    assert result.returncode == 0, result.stderr
    assert failure_lines(result) == []
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file())
    assert written == ["a.webp", "loose.webp", "sub/b.webp", "sub/deeper/c.webp"]
    assert {Image.open(path).format for path in out.rglob("*.webp")} == {"WEBP"}


def test_a_folder_cut_by_a_model_made_for_people_is_told_so_first(tmp_path, tree):
    root = tmp_path / "root"
    model = redness_model(root / "models" / "portrait.onnx")
    write_manifest(root / "models", {"portrait": manifest_entry(model, portrait_only=True)})
    result = cli("remove", tree, "-o", tmp_path / "out", "--root", root, "-m", "portrait")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        "note: portrait is made for people (portraits): on products, animals or cars it can miss most of the "
        "subject; choose u2net or isnet-medium for those"
    )
    assert "note:" not in cli("remove", tree, "-o", tmp_path / "plain", "--root", root).stderr


def test_two_inputs_of_one_name_get_two_outputs_named_as_zip_members_are(tmp_path):
    first = small_photo(tmp_path / "x" / "photo.jpg")
    second = small_photo(tmp_path / "y" / "photo.png", "coffee")
    out = tmp_path / "out"
    result = cli("remove", first, second, "-o", out, "--in-process")
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["photo-png.png", "photo.png"]


def test_output_both_writes_each_mask_beside_its_cutout(tmp_path, tree):
    out = tmp_path / "out"
    result = cli("remove", tree / "sub", "-o", out, env={"BGREMOVER_OUTPUT": "both"})
    assert result.returncode == 0, result.stderr
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file())
    assert written == ["b.mask.png", "b.png", "deeper/c.mask.png", "deeper/c.png"]


def test_an_output_folder_inside_the_input_is_not_cut_out_again(tmp_path, tree):
    out = tree / "cut"
    assert cli("remove", tree, "-o", out, "--in-process").returncode == 0
    again = cli("remove", tree, "-o", out, "--in-process")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"3 of 3 images cut out into {out}"
    assert not (out / "cut").exists()


def test_a_missing_input_is_one_failure_line_and_the_rest_still_run(tmp_path, tree):
    out = tmp_path / "out"
    result = cli("remove", tmp_path / "absent", tree / "a.jpg", "-o", out, "--in-process")
    assert result.returncode == 1
    assert failure_lines(result) == [f"bgremover: {tmp_path / 'absent'}: no such file or folder"]
    assert [path.name for path in out.iterdir()] == ["a.png"]


# ---------------------------------------------------------------- isolation


def whoami_tree(tmp_path) -> tuple:
    """Three files for the fake job, each asking it to record which process ran it."""
    folder, records = tmp_path / "jobs", tmp_path / "records"
    records.mkdir()
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"whoami {records / path.stem}.json\n")
    return folder, records


def who_ran(records) -> list[dict]:
    return [json.loads((records / f"{stem}.json").read_text()) for stem in ("a", "b", "c")]


def test_each_image_runs_in_a_fresh_process_of_its_own(tmp_path):
    folder, records = whoami_tree(tmp_path)
    result = cli("remove", folder, "-o", tmp_path / "out", env=FAKE_JOB)
    assert result.returncode == 0, result.stderr
    ran = who_ran(records)
    assert len({job["pid"] for job in ran}) == 3, ran
    assert [job["jobs_in_this_process"] for job in ran] == [1, 1, 1]
    # Forked from the one preloaded fork server, and re-parented to the command (a child subreaper).
    assert len({job["preloaded_id"] for job in ran}) == 1
    parents = {job["ppid"] for job in ran}
    assert len(parents) == 1 and not parents & {job["pid"] for job in ran}
    assert len({job["pgid"] for job in ran}) == 3, "each in its own process group"


def test_in_process_runs_every_image_in_the_one_process(tmp_path):
    folder, records = whoami_tree(tmp_path)
    result = cli("remove", folder, "-o", tmp_path / "out", "--in-process", env=FAKE_JOB)
    assert result.returncode == 0, result.stderr
    ran = who_ran(records)
    assert len({job["pid"] for job in ran}) == 1, ran
    assert [job["jobs_in_this_process"] for job in ran] == [1, 2, 3]


def test_a_job_that_dies_by_a_signal_fails_its_image_alone(tmp_path):
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "a.jpg").write_text("ok\n")
    (folder / "b.jpg").write_text("sigkill\n")
    (folder / "c.jpg").write_text("ok\n")
    result = cli("remove", folder, "-o", tmp_path / "out", env=FAKE_JOB)
    assert result.returncode == 1
    assert failure_lines(result) == [
        f"bgremover: {folder / 'b.jpg'}: the job was killed by SIGKILL (perhaps out of memory)"
    ]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]


def test_a_job_killed_by_a_real_time_signal_is_named_by_it_and_the_rest_are_cut_out(tmp_path):
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "a.jpg").write_text("ok\n")
    (folder / "b.jpg").write_text(f"signal {signal.SIGRTMIN + 3}\n")
    (folder / "c.jpg").write_text("ok\n")
    result = cli("remove", folder, "-o", tmp_path / "out", env=FAKE_JOB)
    assert result.returncode == 1
    assert failure_lines(result) == [f"bgremover: {folder / 'b.jpg'}: the job was killed by SIGRTMIN+3"]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]


# ---------------------------------------------------------------- stdin and stdout


def test_stdin_to_stdout_round_trip_gives_a_png_cutout(tmp_path):
    source = PHOTOS / "coffee.jpg"
    result = cli_piped("remove", "-", "-", stdin=source.read_bytes())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    with Image.open(io.BytesIO(result.stdout)) as cutout, Image.open(source) as original:
        assert (cutout.format, cutout.mode, cutout.size) == ("PNG", "RGBA", original.size)
    on_disk = tmp_path / "cut.png"
    assert cli("remove", source, on_disk).returncode == 0
    assert on_disk.read_bytes() == result.stdout, "the same cutout as `remove IN OUT.png`"


def test_stdin_that_is_no_image_fails_in_one_line_and_writes_nothing_to_stdout():
    result = cli_piped("remove", "-", "-", stdin=b"hello\n")
    assert result.returncode == 1
    assert one_error_line(result).startswith("bgremover: stdin: ")
    assert result.stdout == b""


# ---------------------------------------------------------------- usage, and the bar


def test_remove_with_one_path_and_no_output_folder_is_a_usage_error():
    result = cli("remove", PHOTOS / "coffee.jpg")
    assert result.returncode == 2
    assert "INPUT OUTPUT" in one_error_line(result) and "-o OUTDIR" in one_error_line(result)


def test_the_progress_line_reads_as_the_status_bar_does():
    assert progress_line(0, 40, 0, [100.0], 100.0) == "[....................]  0/40  rate —  ETA —"
    assert progress_line(10, 40, 1, [100.0, *[100.0 + i for i in range(1, 11)]], 110.0) == (
        "[#####...............]  10/40  1 failed  rate 1/s  ETA 30s"
    )
    assert progress_line(40, 40, 0, [0.0, 20.0, 40.0], 40.0).startswith("[####################]  40/40")
