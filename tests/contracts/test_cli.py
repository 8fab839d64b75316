"""The command-line contract: `python -m bgremover ...` as a real process, read as a user reads it.

Every test runs the CLI as a subprocess with a clean environment (no BGREMOVER_*
variable except those the test sets), so what it checks is what a user at a
shell sees: the exit code, the lines on stdout and stderr, and the files left
behind. Exit codes: 0 success, 1 the work failed, 2 a usage or configuration problem.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import PHOTOS, REPO
from tests.support.cli import cli, one_error_line
from tests.support.harness import Daemon, drop, wait_for

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


@pytest.mark.parametrize(("variable", "value", "setting"), [
    ("BGREMOVER_OUTPUT_FORMAT", "gif", "output_format"),
    ("BGREMOVER_JOB_TIMEOUT_SECONDS", "-1", "job_timeout_seconds"),
    ("BGREMOVER_KILL_GRACE_SECONDS", "9", "kill_grace_seconds"),
    ("BGREMOVER_QUALITY", "many", "quality"),
    ("BGREMOVER_THREADS", "0", "threads"),
    ("BGREMOVER_PNG_COMPRESS_LEVEL", "10", "png_compress_level"),
    ("BGREMOVER_WEBP_METHOD", "7", "webp_method"),
    ("BGREMOVER_AVIF_SPEED", "fast", "avif_speed"),
    ("BGREMOVER_MAX_MEGAPIXELS", "0", "max_megapixels"),
    ("BGREMOVER_LARGE_IMAGES", "shrink", "large_images"),
    ("BGREMOVER_PROVIDERS", "", "providers"),
])
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(tmp_path, variable, value, setting):
    result = cli("run", "--root", tmp_path / "root", env={variable: value})
    assert result.returncode == 2
    line = one_error_line(result)
    assert f"'{setting}'" in line and repr(value) in line, line
    assert not (tmp_path / "root").exists(), "a refused start-up must not create the hot folder"


def test_an_execution_provider_this_machine_lacks_stops_run_instead_of_falling_back(tmp_path):
    root = tmp_path / "root"
    result = cli("run", "--root", root, env={"BGREMOVER_PROVIDERS": "CUDAExecutionProvider"})
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "CUDAExecutionProvider is not available" in line and "CPUExecutionProvider" in line, line
    assert "providers setting" in line, line
    assert not (root / "inbox").exists(), "a refused start-up must not create the hot folder"


def test_remove_refuses_a_missing_execution_provider_too(tmp_path):
    out = tmp_path / "out.png"
    result = cli("remove", PHOTOS / "coffee.jpg", out, env={"BGREMOVER_PROVIDERS": "CUDAExecutionProvider"})
    assert result.returncode == 2, result.stderr
    assert "CUDAExecutionProvider is not available" in one_error_line(result)
    assert not out.exists()


def test_a_second_daemon_on_the_same_root_refuses_to_start_and_a_killed_one_leaves_no_lock(tmp_path):
    root = tmp_path / "root"
    first = Daemon(root).start()
    try:
        second = cli("run", "--root", root)
        assert second.returncode == 2, second.stderr
        line = one_error_line(second)
        assert f"pid {first.process.pid}" in line and "already running" in line and str(root) in line, line
        assert first.process.poll() is None, "the refused start must not disturb the running daemon"
    finally:
        first.kill()  # kill -9: no clean-up of any kind
    with Daemon(root) as third:  # the kernel dropped the lock with the process
        drop(root / "inbox", "after/a.jpg", "ok")
        assert third.wait_complete("after")["counts"]["done"] == 1


def test_run_says_what_the_jobs_actually_run_on(tmp_path):
    with Daemon(tmp_path / "root", fake_jobs=False, threads=1) as daemon:
        (ready,) = daemon.events("daemon_ready")
    assert ready["providers"] == ["CPUExecutionProvider"]
    assert ready["intra_op_threads"] == 1 and ready["threads"] == 1
    assert ready["onnxruntime"] and ready["first_session_ms"] > 0


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
    return Path(result.stdout[len(prefix):].strip())


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
    config.write_text("quality = 50\noutput_format = \"webp\"\nstable_seconds = 7\n")
    monkeypatch.setenv("BGREMOVER_QUALITY", "60")
    monkeypatch.setenv("BGREMOVER_OUTPUT_FORMAT", "avif")
    settings = load_settings(config, quality=70)
    # quality: flag wins; output_format: env beats file; stable_seconds: file beats default.
    assert (settings.quality, settings.output_format, settings.stable_seconds) == (70, "avif", 7.0)
    assert settings.session_idle_seconds == 30.0  # nobody set it: the default


# ---------------------------------------------------------------- a damaged model


@pytest.fixture
def damaged_install(tmp_path) -> Path:
    """A copy of the package laid out as a wheel installs it (bgremover/models/bundled/ inside), one byte of the model flipped.

    matting.models_dir() has no setting or variable; it looks beside the package,
    so a package copy is the only way to point a real `bgremover` process at another models folder.
    """
    site = tmp_path / "site"
    shutil.copytree(REPO / "daemon" / "bgremover", site / "bgremover", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "models", site / "bgremover" / "models" / "bundled")
    model = site / "bgremover" / "models" / "bundled" / "u2netp.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    return site


def test_a_damaged_model_stops_run_with_a_clear_sha256_message(tmp_path, damaged_install):
    root = tmp_path / "root"
    result = cli("run", "--root", root, cwd=tmp_path, pythonpath=damaged_install)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "sha256" in line and "damaged" in line, line
    assert str(damaged_install / "bgremover" / "models" / "bundled" / "u2netp.onnx") in line, "the message names the copy's model"
    assert not (root / "inbox").exists(), "the daemon must not start when the model is damaged"


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


# ---------------------------------------------------------------- status, retry, cancel on a real database


@pytest.fixture(scope="module")
def finished_root(tmp_path_factory) -> Path:
    """A root whose database a real daemon wrote (fake jobs): `report` has one done and two failed items."""
    root = tmp_path_factory.mktemp("finished") / "root"
    with Daemon(root) as daemon:
        drop(root / "inbox", "report/a.jpg", "ok")
        drop(root / "inbox", "report/b.jpg", "exit 3")
        drop(root / "inbox", "report/c.jpg", "exit 4")
        drop(root / "inbox", "other/x.jpg", "ok")
        daemon.wait_complete("report")
        daemon.wait_complete("other")
        assert daemon.stop() == 0
    return root


@pytest.fixture
def root(finished_root, tmp_path) -> Path:
    """This test's own copy of the finished root, so markers one test writes never reach another."""
    copy = tmp_path / "root"
    shutil.copytree(finished_root, copy)
    return copy


def markers(root: Path, kind: str) -> set[str]:
    folder = root / kind
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def item_states(lines: list[str]) -> list[tuple[str, str]]:
    """(status, name) of each item line of `status SESSION`, sorted."""
    return sorted((line.split()[0], line.split()[1].rstrip(":")) for line in lines if line.startswith("  "))


def test_status_without_a_database_says_there_are_no_sessions(tmp_path):
    result = cli("status", "--root", tmp_path / "empty")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"no sessions yet under {tmp_path / 'empty'}\n"
    assert not (tmp_path / "empty").exists(), "status only reads"


def test_status_shows_each_session_its_counts_and_each_failure_with_its_retry_path(root):
    result = cli("status", "--root", root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "daemon: not running; 0 queued, 0 processing"
    report = next(line for line in lines if line.startswith("report "))
    assert " complete " in report and "3/3" in report and "1 done, 2 failed" in report and "report.zip" in report
    other = next(line for line in lines if line.startswith("other "))
    assert " complete " in other and "1/1  1 done" in other and "failed" not in other
    failures = sorted(line.strip() for line in lines if line.startswith("  "))
    assert failures == [
        f"failed     b.jpg: the job crashed with exit code 3 (retry: touch {root / 'retry' / 'report' / 'b.jpg'})",
        f"failed     c.jpg: the job crashed with exit code 4 (retry: touch {root / 'retry' / 'report' / 'c.jpg'})",
    ]
    assert result.stderr == ""


def test_status_of_one_session_lists_every_item(root):
    result = cli("status", "--root", root, "report")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("daemon: ") and lines[1].startswith("report ")
    assert not any(line.startswith("other") for line in lines)
    assert len(lines) == 5
    assert item_states(lines) == [("done", "a.jpg"), ("failed", "b.jpg"), ("failed", "c.jpg")]
    assert "  done       a.jpg -> a.png" in lines


def test_status_of_an_unknown_session_fails(root):
    result = cli("status", "--root", root, "nosuch")
    assert result.returncode == 1
    assert one_error_line(result) == "bgremover: no session named 'nosuch'"


def test_retry_of_one_item_touches_only_its_marker(root):
    result = cli("retry", "--root", root, "report", "b.jpg")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "retry requested: report/b.jpg\n"
    assert markers(root, "retry") == {"report/b.jpg"}


def test_retry_of_a_session_touches_every_failed_item(root):
    result = cli("retry", "--root", root, "report")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["retry requested: report/b.jpg", "retry requested: report/c.jpg"]
    assert markers(root, "retry") == {"report/b.jpg", "report/c.jpg"}


@pytest.mark.parametrize(("args", "message"), [
    (("report", "nosuch.jpg"), "session 'report' has no item named 'nosuch.jpg'"),
    (("nosuch", "b.jpg"), "no session named 'nosuch'"),
    (("report", "a.jpg"), "nothing to retry: only failed or cancelled items can be retried"),
    (("other",), "nothing to retry: only failed or cancelled items can be retried"),
])
def test_retry_of_something_that_cannot_be_retried_fails_and_touches_nothing(root, args, message):
    result = cli("retry", "--root", root, *args)
    assert result.returncode == 1
    assert one_error_line(result) == f"bgremover: {message}"
    assert markers(root, "retry") == set()


def test_retry_without_a_database_fails(tmp_path):
    result = cli("retry", "--root", tmp_path, "report")
    assert result.returncode == 1
    assert one_error_line(result) == f"bgremover: no sessions yet under {tmp_path}"


def test_cancel_touches_the_session_marker(root):
    result = cli("cancel", "--root", root, "report")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "cancel requested: report\n"
    assert markers(root, "cancel") == {"report"}


def test_cancel_of_an_unknown_session_fails_and_touches_nothing(root, tmp_path):
    result = cli("cancel", "--root", root, "nosuch")
    assert result.returncode == 1
    assert one_error_line(result) == "bgremover: no session named 'nosuch'"
    assert markers(root, "cancel") == set()
    empty = cli("cancel", "--root", tmp_path / "empty", "report")
    assert empty.returncode == 1 and not (tmp_path / "empty").exists()


def test_bgremover_root_in_the_environment_serves_every_command(root, tmp_path):
    env = {"BGREMOVER_ROOT": str(root)}
    status = cli("status", env=env, cwd=tmp_path)
    assert status.returncode == 0 and "\nreport " in status.stdout, status.stdout + status.stderr
    one = cli("status", "report", env=env, cwd=tmp_path)
    assert one.returncode == 0 and len(one.stdout.splitlines()) == 5, one.stdout + one.stderr
    retry = cli("retry", "report", "c.jpg", env=env, cwd=tmp_path)
    assert retry.returncode == 0, retry.stderr
    cancel = cli("cancel", "other", env=env, cwd=tmp_path)
    assert cancel.returncode == 0, cancel.stderr
    assert markers(root, "retry") == {"report/c.jpg"} and markers(root, "cancel") == {"other"}
    assert not (tmp_path / "data").exists(), "nothing fell back to the default root"


# ---------------------------------------------------------------- with a live daemon


def test_retry_makes_a_running_daemon_requeue_a_failed_item(tmp_path):
    root, flag = tmp_path / "root", tmp_path / "flaky-flag"
    with Daemon(root) as daemon:
        drop(root / "inbox", "live/good.jpg", "ok")
        drop(root / "inbox", "live/flaky.jpg", f"flaky {flag}")
        daemon.wait_complete("live")

        before = cli("status", "--root", root, "live")  # read-only, beside the running daemon
        assert before.returncode == 0, before.stderr
        assert "failed     flaky.jpg: could not write the result: disk full" in before.stdout

        result = cli("retry", "--root", root, "live", "flaky.jpg")
        assert result.returncode == 0, result.stderr
        wait_for(lambda: all(i["status"] == "done" for i in daemon.status("live")["items"]), what="the retry")
        daemon.wait_complete("live")
        assert set(daemon.zip_members("live")) == {"good.png", "flaky.png"}
        wait_for(lambda: markers(root, "retry") == set(), what="the marker to be consumed")

        after = cli("status", "--root", root, "live")
        assert after.returncode == 0, after.stderr
        assert item_states(after.stdout.splitlines()) == [("done", "flaky.jpg"), ("done", "good.jpg")]
        assert "2/2  2 done" in after.stdout.splitlines()[1]
