"""The one Celery app both sides use, and the settings that make Celery a transport bgremover can trust.

Celery on Redis delivers a task again when it is not acknowledged within the
visibility timeout, so duplicates are normal; the fence against them is the
supervisor's (runner.py, marks.py), not Celery's. Hence:
acks late (a task lost with its worker is delivered again), no reject on worker
lost (that would requeue a poison image without end), one message fetched at a
time, JSON only, and long tasks cancelled when the broker connection is lost
(their message is delivered again, and the fence sorts out the rest).

No STARTED state either: a task's answer key is written by the delivery that
holds its lease alone. Celery keeps a SUCCESS from being overwritten by reading
the key and then writing it, so a refused duplicate that stored STARTED in
between could hide the answer, and the supervisor would count a worker that
answered as lost once its lease lapsed. The lease says a task runs; the key
says only how it ended.

Every key Celery and kombu make, on both sides (the queue, its binding, the
unacknowledged messages, the answers), carries bgremover's prefix, as the
marks do: what bgremover clears or restores is only ever its own, even where
a careless setup shares the database with another app.
"""

from __future__ import annotations

from celery import Celery

from bgremover.runners.celery.marks import PREFIX, QUEUE

TASK_NAME = "bgremover.run_job"
# Unacknowledged messages come back after this; longer than any job may take
# (job_timeout_seconds plus the kill grace), and a worker lost costs at most this.
VISIBILITY_MARGIN_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 3.0


def make_app(settings) -> Celery:
    """The app for `settings` (broker_url, the job limits, broker_visibility_timeout_seconds)."""
    url = settings.broker_url.get_secret_value()
    app = Celery("bgremover", broker=url, backend=url)
    visibility = settings.broker_visibility_timeout_seconds or (
        settings.job_timeout_seconds + settings.kill_grace_seconds + VISIBILITY_MARGIN_SECONDS
    )
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"], result_accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=False, worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_default_queue=QUEUE, task_track_started=False, result_expires=7 * 24 * 3600,
        # Kombu looks for unacknowledged tasks past their timeout only every 100 s by default;
        # every 10 s at most here (sooner with a short timeout), so a hung worker costs what it says.
        broker_transport_options={"visibility_timeout": visibility, "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
                                  "socket_timeout": 10.0, "unacked_restore_throttle": 1,
                                  "unacked_restore_interval": int(max(1, min(10, visibility // 2))),
                                  "global_keyprefix": PREFIX},
        result_backend_transport_options={"visibility_timeout": visibility, "global_keyprefix": PREFIX},
        redis_socket_connect_timeout=CONNECT_TIMEOUT_SECONDS, redis_socket_timeout=10.0,
        broker_connection_timeout=CONNECT_TIMEOUT_SECONDS, broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_publish_retry=False,  # the supervisor's loop must not block: a refused send leaves the item queued
        worker_hijack_root_logger=False, worker_send_task_events=False, task_send_sent_event=False,
    )  # fmt: skip
    return app


def task_id(item: int, attempt: int) -> str:
    """Deterministic: the same attempt of the same item is always the same task."""
    return f"bgremover-{item}-{attempt}"
