"""The job process as the supervisor sees it: a real `python -m bgremover.job`, its exit code, OUT and REPORT."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import REPO
from tests.support.disks import fill, small_tmpfs
from tests.support.images import photo, shape_on_texture, truncated_copy, write_decompression_bomb_png
from tests.support.odd_images import png_with_cut_data_stream

STAGES = {"decode", "preprocess", "inference", "postprocess", "review", "encode", "publish"}


class Job:
    """Paths for one job: the input in in/, the result in out/, the report in reports/."""

    def __init__(self, tmp_path: Path, fmt: str = "png") -> None:
        for name in ("in", "out", "reports"):
            (tmp_path / name).mkdir()
        self.fmt = fmt
        self.model = "u2netp"
        self.input = tmp_path / "in" / "photo.jpg"
        self.output = tmp_path / "out" / f"photo.{fmt}"
        self.report = tmp_path / "reports" / "photo.json"

    def argv(self, *extra: str) -> list[str]:
        return [
            "--input", str(self.input), "--output", str(self.output), "--report", str(self.report),
            "--format", self.fmt, "--quality", "80", "--model", self.model, *extra,
        ]  # fmt: skip

    def run(self, *extra: str, prelude: str | None = None, **popen) -> subprocess.CompletedProcess:
        """Run the job to completion (waited, so nothing leaks). `prelude` is Python run
        in the job process before main(), to plant a fault."""
        if prelude is None:
            command = [sys.executable, "-m", "bgremover.job", *self.argv(*extra)]
        else:
            script = f"import sys\n{prelude}\nfrom bgremover.job.process import main\nsys.exit(main(sys.argv[1:]))"
            command = [sys.executable, "-c", script, *self.argv(*extra)]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, **popen)

    def read_report(self) -> dict:
        return json.loads(self.report.read_text())

    def leftovers(self) -> list[str]:
        """Anything in the output and report folders besides OUT and REPORT: temp files."""
        found = [*self.output.parent.iterdir(), *self.report.parent.iterdir()]
        return sorted(p.name for p in found if p not in (self.output, self.report))


def assert_failed_cleanly(job: Job, result: subprocess.CompletedProcess, code: int, error: str) -> None:
    assert result.returncode == code, result.stderr
    assert job.read_report()["error"] == error
    assert not job.output.exists()
    assert job.leftovers() == []


# ---------------------------------------------------------------- success


@pytest.mark.parametrize("fmt", ["png", "webp", "avif"])
def test_a_photo_becomes_a_cutout(tmp_path, fmt):
    job = Job(tmp_path, fmt)
    job.input.write_bytes(photo("coffee").read_bytes())

    result = job.run()

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    report = job.read_report()
    assert report["error"] is None
    assert set(report["timings_ms"]) == STAGES and all(ms >= 0 for ms in report["timings_ms"].values())
    with Image.open(job.output) as cutout:
        assert cutout.format == fmt.upper() and cutout.mode == "RGBA" and cutout.size == (400, 267)
        low, high = cutout.getchannel("A").getextrema()
        assert low <= 5 and high >= 250
    assert job.leftovers() == []


def test_an_existing_output_is_replaced_whole(tmp_path):
    job = Job(tmp_path)
    job.input.write_bytes(photo("chelsea").read_bytes())
    job.output.write_bytes(b"an older result")
    assert job.run().returncode == 0
    with Image.open(job.output) as cutout:
        assert cutout.size == (400, 266)


# ---------------------------------------------------------------- bad input: exit 2


def write_text(job: Job) -> None:
    job.input.write_text("a shopping list, not a photo\n")


def write_truncated_jpeg(job: Job) -> None:
    truncated_copy(photo("coffee"), job.input)


def write_truncated_png(job: Job) -> None:
    Image.open(photo("coffee")).save(job.input.with_suffix(".png"))
    truncated_copy(job.input.with_suffix(".png"), job.input)
    job.input.with_suffix(".png").unlink()


def write_png_with_cut_data_stream(job: Job) -> None:
    job.input.write_bytes(png_with_cut_data_stream())  # IDAT cut, IEND kept: opens, then fails to decode


def write_bomb(job: Job) -> None:
    write_decompression_bomb_png(job.input)  # 200 M pixels under a .jpg name: content decides


@pytest.mark.parametrize(
    "make_input, error",
    [
        (lambda job: job.input.write_bytes(b""), "the file is empty"),
        (write_text, "the file is not an image Pillow can read"),
        (write_truncated_jpeg, "the image is truncated or corrupt"),
        (write_truncated_png, "the image is truncated or corrupt"),
        (write_png_with_cut_data_stream, "the image is truncated or corrupt"),
        (write_bomb, "the image has 200,000,000 pixels, over the decompression-bomb limit of 160,000,000"),
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png", "png-data-stream-cut", "decompression-bomb"],
)
def test_bad_input_exits_2_with_one_sentence(tmp_path, make_input, error):
    job = Job(tmp_path)
    make_input(job)

    result = job.run()

    assert_failed_cleanly(job, result, 2, error)
    assert result.stderr.strip().splitlines() == [error]


# ---------------------------------------------------------------- a result the disk refuses: exit 73


@pytest.fixture
def unwritable_folder(tmp_path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    # root ignores mode bits; sysfs refuses new files to every user, root included.
    yield folder if not os.access(folder, os.W_OK) else Path("/sys")
    folder.chmod(0o755)  # so pytest can clean tmp_path up


def test_an_unwritable_output_folder_exits_73(tmp_path, unwritable_folder):
    job = Job(tmp_path)
    job.input.write_bytes(photo("chelsea").read_bytes())
    job.output = unwritable_folder / "photo.png"

    result = job.run()

    assert result.returncode == 73, result.stderr
    error = job.read_report()["error"]
    assert error == f"could not write the result: Permission denied ({unwritable_folder / '.tmp-photo.png'})"
    assert result.stderr.strip() == error
    assert not any(p.name.endswith("photo.png") for p in unwritable_folder.iterdir())


def test_a_file_size_limit_exits_73_and_leaves_no_partial_file(tmp_path):
    job = Job(tmp_path)
    job.input.write_bytes(photo("astronaut").read_bytes())

    # A file-size limit makes the kernel refuse writes past 16 KiB (EFBIG), as a
    # full disk refuses them (ENOSPC): the report fits, the cutout does not.
    # Python ignores SIGXFSZ, so the write fails instead of killing the job.
    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    result = job.run(preexec_fn=limit_file_size)

    assert_failed_cleanly(job, result, 73, "could not write the result: File too large")


def test_a_full_disk_exits_73_and_leaves_no_partial_file(tmp_path):
    job = Job(tmp_path)
    job.input.write_bytes(photo("astronaut").read_bytes())
    with small_tmpfs(tmp_path / "full", size_kb=256) as full:
        fill(full)
        job.output = full / "photo.png"  # the report has room elsewhere; the cutout has none

        result = job.run()

        assert result.returncode == 73, result.stderr
        assert job.read_report()["error"] == "could not write the result: No space left on device"
        assert sorted(p.name for p in full.iterdir()) == ["filler"]  # no cutout, no temp file


# ---------------------------------------------------------------- temporary failures: exit 75


def test_a_missing_input_exits_75(tmp_path):
    job = Job(tmp_path)  # nothing written to job.input
    assert_failed_cleanly(job, job.run(), 75, "could not read the input: No such file or directory")


def test_a_missing_model_exits_75(tmp_path):
    job = Job(tmp_path)
    job.input.write_bytes(photo("coffee").read_bytes())
    models = tmp_path / "models"
    models.mkdir()
    (models / "manifest.json").write_text((REPO / "models" / "manifest.json").read_text())

    result = job.run("--models-dir", str(models))

    assert_failed_cleanly(job, result, 75, f"model file {models / 'u2netp.onnx'} is missing")


def test_an_unknown_model_exits_75(tmp_path):
    job = Job(tmp_path)
    job.input.write_bytes(photo("coffee").read_bytes())
    job.model = "u3net"
    assert_failed_cleanly(job, job.run(), 75, "model 'u3net' is not in the manifest (known: u2netp)")


# ---------------------------------------------------------------- bugs and signals


def test_an_unexpected_error_exits_1_with_a_traceback(tmp_path):
    job = Job(tmp_path)
    image, _ = shape_on_texture((80, 60))
    image.save(job.input, "JPEG")
    prelude = "import bgremover.imaging.matting as m\ndef broken(*a):\n    raise RuntimeError('planted bug')\nm.postprocess = broken"

    result = job.run(prelude=prelude)

    assert_failed_cleanly(job, result, 1, "unexpected error: RuntimeError: planted bug")
    assert "Traceback (most recent call last)" in result.stderr and "planted bug" in result.stderr


def test_a_bad_command_line_exits_1_not_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bgremover.job", "--input", "x"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "the following arguments are required" in result.stderr


def test_sigterm_removes_the_temp_file_and_dies_by_the_signal(tmp_path):
    job = Job(tmp_path)
    job.input.write_bytes(photo("coffee").read_bytes())
    # TERM arrives right after the temp file is written, before the rename.
    prelude = (
        "import os, signal, bgremover.imaging.matting as m\nreal = m.encode\n"
        "def encode_then_term(rgba, path, *a):\n"
        "    real(rgba, path, *a)\n    assert path.exists()\n    os.kill(os.getpid(), signal.SIGTERM)\n"
        "m.encode = encode_then_term"
    )

    result = job.run(prelude=prelude)

    assert result.returncode == -signal.SIGTERM, result.stderr
    assert not job.output.exists() and not job.report.exists()
    assert job.leftovers() == []
