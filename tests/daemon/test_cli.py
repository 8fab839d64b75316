"""The command-line contract: `python -m bgremover ...` as a real process, read as a user reads it.

Every test runs the CLI as a subprocess with a clean environment (no BGREMOVER_*
variable except those the test sets), so what it checks is what a user at a
shell sees: the exit code, the lines on stdout and stderr, and the files left
behind. Exit codes: 0 success, 1 the work failed, 2 a usage or configuration problem.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.cli import (
    cli,
    one_error_line,
)
from tests.support.harness import Daemon, drop, wait_for

# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("variable", "value", "setting"),
    [
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
    ],
)
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


# ---------------------------------------------------------------- a damaged model


def test_a_damaged_model_stops_run_with_a_clear_sha256_message(tmp_path, damaged_install):
    root = tmp_path / "root"
    result = cli("run", "--root", root, cwd=tmp_path, pythonpath=damaged_install)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "sha256" in line and "damaged" in line, line
    assert str(damaged_install / "bgremover" / "models" / "bundled" / "u2netp.onnx") in line, (
        "the message names the copy's model"
    )
    assert not (root / "inbox").exists(), "the daemon must not start when the model is damaged"


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("report", "nosuch.jpg"), "session 'report' has no item named 'nosuch.jpg'"),
        (("nosuch", "b.jpg"), "no session named 'nosuch'"),
        (("report", "a.jpg"), "nothing to retry: only failed or cancelled items can be retried"),
        (("other",), "nothing to retry: only failed or cancelled items can be retried"),
    ],
)
def test_retry_of_something_that_cannot_be_retried_fails_and_touches_nothing(root, args, message):
    result = cli("retry", "--root", root, *args)
    assert result.returncode == 1
    assert one_error_line(result) == f"bgremover: {message}"
    assert markers(root, "retry") == set()


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
