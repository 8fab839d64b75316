"""`bgremover worker`: a Celery worker on this host that runs the supervisor's jobs from a shared root.

It is refused at once, in one line, when the broker cannot be reached or its
root is not the supervisor's (the root's identity file must match the one the
supervisor published). Each of its `--slots` pool processes is one job slot.
"""

from __future__ import annotations

import socket
import threading

import structlog

from bgremover.brokerurl import shown
from bgremover.runners.celery import task
from bgremover.runners.celery.app import QUEUE, TASK_NAME, make_app
from bgremover.runners.celery.marks import HEARTBEAT_SECONDS, Marks
from bgremover.runners.celery.message import root_identity
from bgremover.settings import Settings, usable_cores

log = structlog.get_logger()


class WorkerRefused(Exception):
    """The worker cannot serve this supervisor; one sentence why."""


def check(settings: Settings) -> Marks:
    try:
        marks = Marks(settings.broker_url.get_secret_value())
        marks.ping()
        published = marks.root()
    except Exception as exc:  # noqa: BLE001 - redis raises several kinds; each means the same here
        raise WorkerRefused(
            f"cannot reach the broker at {shown(settings.broker_url.get_secret_value())}: {exc}"
        ) from None
    ours = root_identity(settings.state_dir, create=False)
    if published is None:
        raise WorkerRefused("no supervisor has published its root on this broker yet: start `bgremover run` first")
    if ours != published:
        raise WorkerRefused(
            f"{settings.root} is not the supervisor's root (its state/root-id differs, or is "
            "missing): mount the supervisor's root there"
        )
    return marks


def serve(settings: Settings, slots: int, name: str | None) -> None:
    marks = check(settings)
    if not settings.threads_given:  # each slot its share of this host's cores, as job_slots on one machine
        settings = settings.model_copy(update={"threads": max(1, usable_cores() // slots)})
    hostname = f"{name or 'bgremover'}@{socket.gethostname()}"
    app = make_app(settings)
    app.task(name=TASK_NAME, bind=True, acks_late=True)(task.run_job)
    task.configure(settings)
    threading.Thread(target=beat, args=(marks, hostname, slots), name="heartbeat", daemon=True).start()
    log.info(
        "worker_ready",
        worker=hostname,
        slots=slots,
        threads_per_job=settings.threads,
        providers=list(settings.providers),
        root=str(settings.root),
    )
    app.worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={slots}",
            f"--hostname={hostname}",
            "-Q",
            QUEUE,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=INFO",
            "--prefetch-multiplier=1",
        ]
    )


def beat(marks: Marks, hostname: str, slots: int) -> None:
    """The worker's name and slots in Redis every few seconds, for `bgremover status`."""
    pause = threading.Event()
    while True:
        try:
            marks.heartbeat(hostname, slots)
        except Exception as exc:  # noqa: BLE001 - the broker away: said, and tried again
            log.warning("heartbeat_failed", error=str(exc))
        pause.wait(HEARTBEAT_SECONDS / 3)
