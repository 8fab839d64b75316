"""The supervisor's decisions, in process: which job starts, when it is stopped, what its end means.

No process runs: the daemon's jobs go to the fake runner (tests/support/fakerunner.py),
chosen by the runner setting like any runner, and the test says how each job
ends. Every step takes `now`, so the clock is the test's: a deadline is passed
by handing a step a later `now`, never by waiting.
"""

from __future__ import annotations

import json
import signal
import zipfile
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bgremover.contract import ExitCode, JobSpec
from bgremover.models.manifest import load_model_spec
from bgremover.queue.states import SessionState, Status
from bgremover.runners import RUNNERS, runner_class
from bgremover.settings import SettingsError, load_settings
from bgremover.supervisor.loop import Supervisor
from tests.support import fakerunner
from tests.support.finishing import finish_sessions

fakerunner.register()

TIMEOUT, GRACE, LIMIT_MB = 30.0, 2.0, 100
T0 = 1000.0  # the test's clock: any number will do, every step is told the time


def make_daemon(root: Path, **settings) -> Supervisor:
    """A daemon's parts on a real root and a real SQLite file, recovered as at start-up, with the fake runner."""
    settings = load_settings(
        None,
        **{
            "root": root,
            "runner": fakerunner.NAME,
            "stable_seconds": 0,
            "session_idle_seconds": 3600,
            "threads": 1,
            "job_slots": 1,
            "job_timeout_seconds": TIMEOUT,
            "kill_grace_seconds": GRACE,
            "job_memory_limit_mb": LIMIT_MB,
            **settings,
        },
    )
    daemon = Supervisor(settings, load_model_spec(settings.model, verify=False))
    daemon.open_folders()
    daemon.recovery.recover()
    return daemon


@pytest.fixture
def daemon(tmp_path):
    daemon = make_daemon(tmp_path / "root")
    yield daemon
    daemon.builder.close()
    daemon.store.close()


def drop(daemon: Supervisor, *names: str, folder: str | None = None, ticket: str | None = None) -> None:
    """Files dropped into the inbox (a folder of them, with its job ticket) and taken, as one pass would."""
    where = daemon.settings.inbox / folder if folder else daemon.settings.inbox
    where.mkdir(parents=True, exist_ok=True)
    if ticket is not None:
        (where / "bgremover.toml").write_text(ticket)
    for name in names:
        (where / name).write_bytes(b"an image, as far as the supervisor cares: " + name.encode())
    daemon.intake.rescan()
    daemon.taking.take_ready_files(T0)


def status_of(daemon: Supervisor, session: str, name: str) -> tuple[Status, str | None]:
    item = daemon.store.item_named(session, name)
    return item.status, item.error


def loose_session(daemon: Supervisor) -> str:
    return next(s.name for s in daemon.store.sessions() if s.source is None)


def the_job(daemon: Supervisor):
    """The one job running (these tests use one job slot), or None."""
    running = daemon.dispatch.running
    assert len(running) <= 1, f"{len(running)} jobs run in one slot"
    return running[0] if running else None


def job_ends(daemon: Supervisor, returncode: int, now: float, result: bool = False, report: dict | None = None) -> None:
    """The running job ends: it may leave its result and its report first, as a real job would."""
    job = the_job(daemon)
    if result:
        job.handle.spec.output.write_bytes(b"a cutout")
    if report is not None:
        job.handle.spec.report.write_text(json.dumps(report))
    daemon.runner.end(job.handle, returncode)
    daemon.dispatch.reap(now)


# ---------------------------------------------------------------- which job starts


def test_the_oldest_queued_item_starts_first_across_sessions_and_only_one_at_a_time(daemon):
    drop(daemon, "a.jpg")
    drop(daemon, "b.jpg", "c.jpg", folder="shoot")
    loose = loose_session(daemon)
    daemon.dispatch.start_next(T0)
    daemon.dispatch.start_next(T0 + 1)  # one job runs: nothing else starts
    assert len(daemon.runner.submitted) == 1
    assert the_job(daemon).item.name == "a.jpg" and status_of(daemon, loose, "a.jpg")[0] is Status.PROCESSING
    job_ends(daemon, ExitCode.DONE, T0 + 2, result=True)
    daemon.dispatch.start_next(T0 + 2)
    assert the_job(daemon).item.name == "b.jpg"
    job_ends(daemon, ExitCode.DONE, T0 + 3, result=True)
    daemon.dispatch.start_next(T0 + 3)
    assert the_job(daemon).item.name == "c.jpg"
    assert len(daemon.runner.submitted) == 3


def test_the_job_spec_carries_the_sessions_options_and_survives_the_trip_through_argv(daemon):
    drop(daemon, "a.jpg", folder="white", ticket='background = "white"\noutput = "both"\nedges = "clean"\n')
    daemon.dispatch.start_next(T0)
    spec = daemon.runner.submitted[0]
    assert (spec.options.background, spec.options.output, spec.options.edges, spec.options.model) == (
        "#ffffff",
        "both",
        "clean",
        "u2netp",
    )
    assert spec.mask is not None and spec.output.parent == spec.mask.parent == daemon.spool.results
    again = JobSpec.from_argv(spec.argv(), prog="job", description="")
    assert again == JobSpec(**{**vars(spec), "log": None}), "the log travels beside the argv, not in it"


def test_the_job_spec_carries_its_item_and_attempt_beside_the_argv(daemon):
    drop(daemon, "a.jpg")
    daemon.dispatch.start_next(T0)
    spec, item = daemon.runner.submitted[0], the_job(daemon).item
    assert (spec.item, spec.attempt) == (item.id, item.attempts) == (item.id, 1)
    assert not {"--item", "--attempt"} & set(spec.argv()), "the job's own command line stays as it was"


def test_the_worker_a_job_exit_names_is_recorded_with_its_item_and_its_line(daemon):
    drop(daemon, "a.jpg")
    daemon.dispatch.start_next(T0)
    job = the_job(daemon)
    job.handle.spec.output.write_bytes(b"a cutout")
    daemon.runner.end(job.handle, ExitCode.DONE, worker="w1@host")
    with capture_logs() as logs:
        daemon.dispatch.reap(T0 + 1)
    assert daemon.store.item_named(job.item.session, "a.jpg").worker == "w1@host"
    assert [line.get("worker") for line in logs if line["event"] == "job_finished"] == ["w1@host"]


def test_a_task_message_carries_the_item_and_attempt_beside_the_spec_and_gives_them_back(tmp_path):
    from bgremover.runners.celery.message import spec_from, to_message

    root = tmp_path / "root"
    spec = JobSpec(input=root / "in.jpg", output=root / "out.png", report=root / "1-2.report.json", item=7, attempt=3)
    limits = {"job_timeout_seconds": 30, "job_memory_limit_mb": 100, "kill_grace_seconds": 2}
    message = to_message(spec, root, limits)
    assert (message["item"], message["attempt"]) == (7, 3) and not {"item", "attempt"} & message["spec"].keys()
    again = spec_from(message, root, tmp_path / "models")
    assert (again.item, again.attempt) == (7, 3), "read from the message, not from a file's name"


def test_with_nothing_queued_the_runner_is_told_it_is_idle(daemon):
    daemon.dispatch.start_next(T0)
    assert daemon.runner.idles == 1 and daemon.runner.submitted == [] and the_job(daemon) is None


def test_while_the_runner_cannot_start_a_job_the_item_stays_queued(daemon):
    drop(daemon, "a.jpg")
    daemon.runner.available = False
    daemon.dispatch.start_next(T0)
    assert the_job(daemon) is None and status_of(daemon, loose_session(daemon), "a.jpg")[0] is Status.QUEUED
    daemon.runner.available = True
    daemon.dispatch.start_next(T0 + 5)
    assert the_job(daemon).item.name == "a.jpg"


def test_a_job_that_never_started_puts_its_item_back_in_the_queue(daemon):
    drop(daemon, "a.jpg")
    daemon.runner.lose_next = True
    with capture_logs() as logs:
        daemon.dispatch.start_next(T0)
    assert the_job(daemon) is None and status_of(daemon, loose_session(daemon), "a.jpg")[0] is Status.QUEUED
    assert [e["event"] for e in logs if e["event"] == "job_process_lost"] == ["job_process_lost"]


# ---------------------------------------------------------------- what its end means


@pytest.mark.parametrize(("returncode", "result", "report", "status", "error"), [
    (ExitCode.DONE, True, None, Status.DONE, None),
    (ExitCode.DONE, False, None, Status.FAILED, "the job exited without writing its result"),
    (ExitCode.BAD_INPUT, False, {"error": "the file is not an image Pillow can read"}, Status.FAILED,
     "the file is not an image Pillow can read"),
    (ExitCode.TEMPORARY, False, {"error": "could not read the input: I/O error"}, Status.FAILED,
     "could not read the input: I/O error; touch the retry marker to try again"),
    (-9, False, None, Status.FAILED, "the job was killed by SIGKILL (perhaps out of memory)"),
    (-(signal.SIGRTMIN + 3), False, None, Status.FAILED, "the job was killed by SIGRTMIN+3"),
    (-signal.SIGRTMAX, False, None, Status.FAILED, "the job was killed by SIGRTMAX"),
    (-(signal.SIGRTMIN - 1), False, None, Status.FAILED, f"the job was killed by signal {signal.SIGRTMIN - 1}"),
    (3, False, None, Status.FAILED, "the job crashed with exit code 3"),
    (ExitCode.CANT_WRITE, False, {"error": "could not write the result: No space left on device"}, Status.QUEUED,
     None),
])  # fmt: skip
def test_the_items_next_status_follows_the_jobs_exit(daemon, returncode, result, report, status, error):
    drop(daemon, "a.jpg")
    daemon.dispatch.start_next(T0)
    job_ends(daemon, returncode, T0 + 1, result=result, report=report)
    assert the_job(daemon) is None
    assert status_of(daemon, loose_session(daemon), "a.jpg") == (status, error)


def test_one_jobs_conclusion_error_is_said_once_and_the_other_jobs_are_concluded_and_their_slots_freed(tmp_path):
    daemon = make_daemon(tmp_path / "root", job_slots=3)
    try:
        drop(daemon, "a.jpg", "b.jpg", "c.jpg")
        daemon.dispatch.start_next(T0)
        jobs = {job.item.name: job for job in daemon.dispatch.running}
        conclude = daemon.dispatch.conclude

        def conclude_but_b(job, now):
            if job.item.name == "b.jpg":
                raise ValueError("its end cannot be read")
            conclude(job, now)

        daemon.dispatch.conclude = conclude_but_b
        for job in jobs.values():
            job.handle.spec.output.write_bytes(b"a cutout")
            daemon.runner.end(job.handle, ExitCode.DONE)
        with capture_logs() as logs:
            daemon.dispatch.reap(T0 + 1)
        assert daemon.dispatch.running == [] and daemon.dispatch.slots.in_use == 0
        loose = loose_session(daemon)
        assert status_of(daemon, loose, "a.jpg") == status_of(daemon, loose, "c.jpg") == (Status.DONE, None)
        assert status_of(daemon, loose, "b.jpg") == (
            Status.FAILED,
            "the daemon could not conclude its job (exit code 0)",
        )
        assert [e["item"] for e in logs if e["event"] == "job_conclusion_failed"] == ["b.jpg"]
    finally:
        daemon.store.close()


def test_a_job_past_its_deadline_is_stopped_with_the_grace_then_failed_for_its_time(daemon):
    drop(daemon, "a.jpg")
    daemon.dispatch.start_next(T0)
    pid = the_job(daemon).handle.pid
    daemon.dispatch.enforce_limits(T0 + TIMEOUT - 0.01)
    assert daemon.runner.stops == []
    daemon.dispatch.enforce_limits(T0 + TIMEOUT)
    daemon.dispatch.enforce_limits(T0 + TIMEOUT + 1)  # asked once, not once per pass
    assert daemon.runner.stops == [(pid, GRACE)]
    job_ends(daemon, -15, T0 + TIMEOUT + 1)
    assert status_of(daemon, loose_session(daemon), "a.jpg") == (
        Status.FAILED,
        f"the job took longer than {TIMEOUT:g} s (job_timeout_seconds) and was killed",
    )


def test_a_job_over_its_memory_limit_is_killed_at_once_and_failed_for_it(daemon):
    drop(daemon, "a.jpg")
    daemon.dispatch.start_next(T0)
    pid = the_job(daemon).handle.pid
    daemon.runner.memory_kb[pid] = LIMIT_MB * 1024
    daemon.dispatch.enforce_limits(T0 + 1)
    assert daemon.runner.stops == [], "at the limit is not over it"
    daemon.runner.memory_kb[pid] = LIMIT_MB * 1024 + 1
    daemon.dispatch.enforce_limits(T0 + 2)
    assert daemon.runner.stops == [(pid, 0)]
    job_ends(daemon, -9, T0 + 2)
    assert status_of(daemon, loose_session(daemon), "a.jpg") == (
        Status.FAILED,
        f"the job used more than the memory limit of {LIMIT_MB} MB (job_memory_limit_mb) and was stopped",
    )


def test_cancel_stops_the_running_job_and_cancels_what_is_queued(daemon):
    drop(daemon, "a.jpg", "b.jpg", folder="shoot")
    drop(daemon, "other.jpg")
    daemon.dispatch.start_next(T0)
    pid = the_job(daemon).handle.pid
    (daemon.settings.cancel_dir / "shoot").touch()
    daemon.markers.read_markers(T0 + 1)
    assert daemon.runner.stops == [(pid, GRACE)]
    assert status_of(daemon, "shoot", "b.jpg") == (Status.CANCELLED, None)
    job_ends(daemon, -15, T0 + 2)
    assert status_of(daemon, "shoot", "a.jpg") == (Status.CANCELLED, "cancelled while processing")
    daemon.dispatch.start_next(T0 + 2)
    assert the_job(daemon).item.name == "other.jpg", "another session's item is not cancelled"


def test_an_orderly_stop_puts_the_running_item_back_in_the_queue(daemon):
    drop(daemon, "a.jpg")
    daemon.dispatch.start_next(T0)
    daemon.dispatch.stop_all("shutdown", grace=GRACE, now=T0 + 1)
    job_ends(daemon, -15, T0 + 2)
    assert status_of(daemon, loose_session(daemon), "a.jpg") == (Status.QUEUED, None)


def test_a_done_session_is_zipped_and_completed_and_a_failed_item_is_retried_by_its_marker(daemon):
    drop(daemon, "a.jpg", "b.jpg", folder="shoot")
    daemon.sessions.close_session(daemon.store.session("shoot"), "idle")
    daemon.dispatch.start_next(T0)
    job_ends(daemon, ExitCode.DONE, T0 + 1, result=True)
    daemon.dispatch.start_next(T0 + 1)
    job_ends(daemon, ExitCode.BAD_INPUT, T0 + 2, report={"error": "not an image"})
    finish_sessions(daemon, T0 + 2)
    assert daemon.store.session("shoot").state is SessionState.COMPLETE
    (daemon.settings.retry_dir / "shoot" / "b.jpg").touch()
    daemon.markers.read_markers(T0 + 3)
    assert daemon.store.session("shoot").state is SessionState.PROCESSING
    daemon.dispatch.start_next(T0 + 3)
    assert the_job(daemon).item.name == "b.jpg" and the_job(daemon).item.attempts == 2


@pytest.mark.parametrize("retried_job_ends_first", [False, True], ids=["retry-still-queued", "retry-done-already"])
def test_a_zip_written_while_a_retry_changes_its_session_never_completes_it(daemon, retried_job_ends_first):
    drop(daemon, "a.jpg", "b.jpg", folder="shoot")
    daemon.sessions.close_session(daemon.store.session("shoot"), "idle")
    daemon.dispatch.start_next(T0)
    job_ends(daemon, ExitCode.DONE, T0 + 1, result=True)
    daemon.dispatch.start_next(T0 + 1)
    job_ends(daemon, ExitCode.BAD_INPUT, T0 + 2, report={"error": "not an image"})
    daemon.sessions.finish_sessions(T0 + 2)
    assert daemon.builder.building("shoot"), "its ZIP, of a.png alone, is being written"

    (daemon.settings.retry_dir / "shoot" / "b.jpg").touch()
    daemon.markers.read_markers(T0 + 3)  # QUEUED again while the ZIP is written
    if retried_job_ends_first:
        daemon.dispatch.start_next(T0 + 3)
        job_ends(daemon, ExitCode.DONE, T0 + 4, result=True)
    daemon.builder.wait()
    with capture_logs() as logs:
        daemon.sessions.finish_sessions(T0 + 5)
    assert daemon.store.session("shoot").state is SessionState.PROCESSING, "never complete with a stale ZIP"
    assert [line["session"] for line in logs if line["event"] == "zip_outdated"] == ["shoot"]

    if not retried_job_ends_first:
        daemon.dispatch.start_next(T0 + 5)
        job_ends(daemon, ExitCode.DONE, T0 + 6, result=True)
    finish_sessions(daemon, T0 + 7)
    assert daemon.store.session("shoot").state is SessionState.COMPLETE
    with zipfile.ZipFile(daemon.settings.outbox / "shoot.zip") as archive:
        assert sorted(archive.namelist()) == ["a.png", "b.png"]


# ---------------------------------------------------------------- recovery


def test_recovery_requeues_what_a_killed_life_was_running_and_asks_the_runner_to_end_its_job(tmp_path):
    first = make_daemon(tmp_path / "root")
    drop(first, "a.jpg")
    first.dispatch.start_next(T0)
    pid = the_job(first).handle.pid
    first.store.close()  # kill -9: nothing else of the first life runs
    settings = first.settings
    second = Supervisor(settings, load_model_spec(settings.model, verify=False))
    second.open_folders()
    second.runner.leftovers.add(pid)
    with capture_logs() as logs:
        second.recovery.recover()
    try:
        assert second.runner.forgotten == [pid]
        assert [e["pid"] for e in logs if e["event"] == "leftover_job_killed"] == [pid]
        assert status_of(second, loose_session(second), "a.jpg") == (Status.QUEUED, None)
        second.dispatch.start_next(T0)
        assert the_job(second).item.attempts == 2
    finally:
        second.store.close()


# ---------------------------------------------------------------- the runner table


def test_a_runner_is_one_entry_in_the_table_and_the_setting_names_it(tmp_path):
    assert runner_class("local").__name__ == "LocalRunner"
    assert runner_class(fakerunner.NAME) is fakerunner.FakeRunner
    assert set(RUNNERS) >= {"local", fakerunner.NAME}
    with pytest.raises(SettingsError) as refused:
        load_settings(None, root=tmp_path, runner="nowhere")
    assert "runner" in str(refused.value) and "local" in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1


def test_a_runner_whose_packages_are_missing_is_refused_in_one_sentence(monkeypatch):
    from bgremover import runners
    from bgremover.runners.api import RunnerError

    monkeypatch.setitem(runners.RUNNERS, "celery", "celery_that_is_not_installed.runner:CeleryRunner")
    with pytest.raises(RunnerError) as refused:
        runners.runner_class("celery")
    assert str(refused.value) == (
        "the celery runner needs celery_that_is_not_installed, which is not installed "
        "(pip install 'bgremover[cluster]')"
    )
