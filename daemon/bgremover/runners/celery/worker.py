"""`bgremover worker`: a Celery worker on this host that runs the supervisor's jobs from a shared root.

It is refused at once, in one line, when the broker cannot be reached or it
cannot do the supervisor's work (fitness.py: another version, the model
missing, another root, a root it cannot read or write, a provider this host
lacks); the line is also put in its heartbeat, so `bgremover status` lists it.
While the broker holds no root (no supervisor yet, or a Redis restart lost it
until the supervisor publishes it again) it starts and waits, taking no task.
Once running, it checks itself again every few seconds: while a check fails it
stops taking tasks (the gate below), says why in its log and heartbeat, and
the supervisor stops counting its slots; it takes tasks again once all pass.
Each of its `--slots` pool processes is one job slot.
"""

from __future__ import annotations

import socket
import threading

import structlog
from celery import bootsteps, signals

from bgremover.brokerurl import shown
from bgremover.runners.celery import task
from bgremover.runners.celery.app import QUEUE, TASK_NAME, make_app
from bgremover.runners.celery.fitness import Fitness, Published, missing_providers
from bgremover.runners.celery.marks import Marks, model_queue, shared_database
from bgremover.runners.celery.tally import Tally, WorkerMetrics
from bgremover.service.metrics import MetricsUnavailable
from bgremover.settings import Settings, usable_cores
from bgremover.version import __version__

log = structlog.get_logger()

CHECK_SECONDS = 2.0  # how often the worker checks itself and says so in its heartbeat
GATE_SECONDS = 1.0  # how often the consumer's loop follows the last check


class WorkerRefused(Exception):
    """The worker cannot serve this supervisor; one sentence why."""


class Health:
    """The last check's verdict, written by the heartbeat thread and read by the gate on the consumer's loop."""

    def __init__(self, published: Published, models: list[str]) -> None:
        self.problem: str | None = None
        self.check: str | None = None  # the failing check's name (fitness.CHECKS), for the metrics
        self.broker_up = 1  # whether the last heartbeat reached the broker
        self.published = published  # the supervisor's root and facts, as last read from the broker
        self.models = models  # what it has, as found at start: a model added later needs a restart


def check(settings: Settings, hostname: str, slots: int) -> tuple[Marks, Health]:
    url = settings.broker_url.get_secret_value()
    try:
        marks = Marks(url)
        marks.ping()
        shared = shared_database(*marks.foreign_keys(), shown(url))
        published = Published(marks.root(), marks.supervisor())
    except Exception as exc:  # noqa: BLE001 - redis raises several kinds; each means the same here
        raise WorkerRefused(f"cannot reach the broker at {shown(url)}: {exc}") from None
    if shared:  # its heartbeat would be one more key in another app's database: refused without one
        raise WorkerRefused(shared)
    lacking = missing_providers(tuple(settings.providers))
    failed = Fitness(settings).failing(published.root, published.supervisor)
    if failed is None and lacking:
        failed = ("providers", lacking)
    problem = failed[1] if failed else None
    refusal = problem if published.known else lacking
    if refusal:
        try:  # listed by `bgremover status` until its heartbeat lapses; systemd starts it again meanwhile
            marks.heartbeat(hostname, slots, __version__, refusal, [])
        except Exception:  # noqa: BLE001 - the refusal itself is what matters
            pass
        raise WorkerRefused(refusal)
    health = Health(published, models_here(settings))
    # No root in the broker: a Redis restarted without persistence (or emptied) has lost it, and the supervisor
    # publishes it again within seconds. A worker a host starts in that window waits for it, gated like a
    # running worker whose check fails, instead of exiting: the rest of its checks run once the facts are there.
    follow(health, failed, hostname)
    return marks, health


def models_here(settings: Settings) -> list[str]:
    """The models this worker has (in the bundled manifest or its models folder's, the file present): it reads
    the queue of each, where the tasks of a model only a ticket asks for wait (marks.model_queue)."""
    from bgremover.models.manifest import ModelError, models_dir, read_manifest, spec_from_entry

    found = set()
    for folder in (models_dir(), settings.models_folder):
        try:
            manifest = read_manifest(folder, missing_ok=True)
        except ModelError:
            continue  # a damaged manifest offers nothing; fitness.py says so if it holds the supervisor's model
        for name, entry in manifest.items():
            try:
                if spec_from_entry(name, entry, folder).path.is_file():
                    found.add(name)
            except ModelError:
                continue
    return sorted(found)


def serve(settings: Settings, slots: int, name: str | None) -> None:
    hostname = f"{name or 'bgremover'}@{socket.gethostname()}"
    marks, health = check(settings, hostname, slots)
    if not settings.threads_given:  # each slot its share of this host's cores, as job_slots on one machine
        settings = settings.model_copy(update={"threads": max(1, usable_cores() // slots)})
    app = make_app(settings)
    app.task(name=TASK_NAME, bind=True, acks_late=True)(task.run_job)
    tally = Tally(slots)  # mapped before the pool forks: each pool process counts in its row
    task.configure(settings, health.published, tally)
    signals.worker_process_init.connect(lambda **_: tally.started(), weak=False)
    metrics = WorkerMetrics(settings, tally, health, slots, health.models)
    try:
        metrics.start()
    except MetricsUnavailable as exc:
        raise WorkerRefused(str(exc)) from None
    Gate.health, Gate.queues = health, [QUEUE, *(model_queue(model) for model in health.models)]
    app.steps["consumer"].add(Gate)
    stopped = threading.Event()
    beating = threading.Thread(
        target=beat, args=(marks, Fitness(settings), health, hostname, slots, stopped), name="heartbeat", daemon=True
    )
    beating.start()
    log.info(
        "worker_ready",
        worker=hostname,
        slots=slots,
        version=__version__,
        threads_per_job=settings.threads,
        providers=list(settings.providers),
        root=str(settings.root),
    )
    try:
        run(app, slots, hostname, Gate.queues)
    finally:
        stopped.set()
        beating.join(timeout=10)  # its last heartbeat written before the key goes, never after
        try:
            marks.gone(hostname)
        except Exception:  # noqa: BLE001 - the broker away: its heartbeat lapses by itself
            pass
        metrics.close()  # after the pool: the textfile's last figures are final


def run(app, slots: int, hostname: str, queues: list[str]) -> None:
    app.worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={slots}",
            f"--hostname={hostname}",
            "-Q",
            ",".join(queues),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=INFO",
            "--prefetch-multiplier=1",
        ]
    )


def beat(marks: Marks, fitness: Fitness, health: Health, hostname: str, slots: int, stopped: threading.Event) -> None:
    """Every few seconds, until the worker stops: the checks again, their verdict for the gate, and the
    heartbeat that tells status."""
    broker_warned = False
    while not stopped.is_set():
        try:
            health.published = health.published.updated(marks.root(), marks.supervisor())
            follow(health, fitness.failing(health.published.root, health.published.supervisor), hostname)
            marks.heartbeat(hostname, slots, __version__, health.problem, health.models)
            broker_warned, health.broker_up = False, 1
        except Exception as exc:  # noqa: BLE001 - the broker away: said once, and tried again
            health.broker_up = 0
            if not broker_warned:
                log.warning("heartbeat_failed", error=str(exc))
            broker_warned = True
        stopped.wait(CHECK_SECONDS)


def follow(health: Health, failed: tuple[str, str] | None, hostname: str) -> None:
    check, problem = failed or (None, None)
    if problem and problem != health.problem:
        log.warning("worker_unfit", worker=hostname, problem=problem, note="it takes no task until this is put right")
    elif health.problem and not problem:
        log.info("worker_fit", worker=hostname, note="it takes tasks again")
    health.problem, health.check = problem, check


class Gate(bootsteps.StartStopStep):
    """The task queue consumed only while the last check passed; followed on the consumer's own loop.

    Cancelling the queue stops the fetching of new messages; a message already
    fetched meets the same check in its pool process (task.py) and is handed back.
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}
    health: Health | None = None
    queues: list[str] = [QUEUE]  # the common queue, and one for each model this worker has

    def __init__(self, parent, **kwargs) -> None:
        super().__init__(parent, **kwargs)
        self.entry = None

    def start(self, consumer) -> None:
        self.follow(consumer)  # before the loop fetches anything: an unfit worker takes nothing
        self.entry = consumer.timer.call_repeatedly(GATE_SECONDS, self.follow, (consumer,))

    def stop(self, consumer) -> None:
        if self.entry is not None:
            self.entry.cancel()
            self.entry = None

    def follow(self, consumer) -> None:
        for queue in self.queues:
            consuming = consumer.task_consumer.consuming_from(queue)
            if self.health.problem and consuming:
                consumer.cancel_task_queue(queue)
            elif not self.health.problem and not consuming:
                consumer.add_task_queue(queue)
